//! The client side of `benches/rebalance_processes.sh`: loads keys into a cluster of
//! `kvstore serve` processes, runs a fixed-rate foreground load and reports its latency,
//! and drives and times a `KVSTORE ADDNODE`.
//!
//! ```text
//! rebalance_load load  --ports P1,P2,P3 --keys N [--value-size 100] [--pipeline 500]
//! rebalance_load fg    --ports P1,P2,P3 --keys N --rate OPS --stop-file F [--connections 4]
//! rebalance_load add   --port P --node n4
//! ```
//!
//! - `load` writes `key:0..key:N` (exactly N distinct keys), each value `--value-size`
//!   bytes, with pipelined `SET`s, one connection per port, each writing its share.
//! - `fg` sends `GET`/`SET` (half each, keys drawn uniformly from the loaded ones) at a fixed
//!   total rate, spread over `--connections` connections round-robin over the ports, until
//!   the stop file exists; latency is measured from each request's *scheduled* send time
//!   (a late request counts the delay it waited, so a stall shows up in the p99 instead of
//!   slowing the load down). Prints one line: `ops errors p50_us p99_us p999_us max_us`.
//! - `add` sends `KVSTORE ADDNODE node` and polls `KVSTORE CHANGE` every 10 ms until the
//!   change ends. Prints `keys stream_s step_s total_s`: `stream_s` runs from the first
//!   poll that sees `step:streaming` to the last poll that sees `keys_copied` grow (the
//!   streams' time, to within the polls and the progress's commit), `step_s` to the first
//!   poll past `streaming`, `total_s` from ADDNODE to `change:none`.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hdrhistogram::Histogram;

/// A blocking RESP client, just enough for SET, GET and KVSTORE.
struct Conn {
    r: BufReader<TcpStream>,
    w: TcpStream,
}

impl Conn {
    fn open(port: u16) -> anyhow::Result<Conn> {
        let s = TcpStream::connect(("127.0.0.1", port)).with_context(|| format!("port {port}"))?;
        s.set_nodelay(true)?;
        s.set_read_timeout(Some(Duration::from_secs(60)))?;
        Ok(Conn {
            r: BufReader::new(s.try_clone()?),
            w: s,
        })
    }

    fn encode(buf: &mut Vec<u8>, args: &[&[u8]]) {
        buf.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
        for a in args {
            buf.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
            buf.extend_from_slice(a);
            buf.extend_from_slice(b"\r\n");
        }
    }

    /// Reads one reply: `Err` text for an error reply, else its bulk or simple text.
    fn reply(&mut self) -> anyhow::Result<Result<Vec<u8>, String>> {
        let mut line = Vec::new();
        self.r.read_until(b'\n', &mut line)?;
        if line.len() < 3 {
            bail!("connection closed");
        }
        let body = &line[1..line.len() - 2];
        let n = || -> anyhow::Result<i64> { Ok(std::str::from_utf8(body)?.parse()?) };
        match line[0] {
            b'+' | b':' => Ok(Ok(body.to_vec())),
            b'-' => Ok(Err(String::from_utf8_lossy(body).into_owned())),
            b'$' | b'=' => {
                let len = n()?;
                if len < 0 {
                    return Ok(Ok(Vec::new()));
                }
                let len = usize::try_from(len)?;
                if len > 64 << 20 {
                    bail!("a reply of {len} bytes");
                }
                let mut data = vec![0; len + 2];
                std::io::Read::read_exact(&mut self.r, &mut data)?;
                data.truncate(len);
                Ok(Ok(data))
            }
            b'*' => {
                let mut all = Vec::new();
                for _ in 0..n()?.max(0) {
                    if let Ok(v) = self.reply()? {
                        all.extend_from_slice(&v);
                        all.push(b'\n');
                    }
                }
                Ok(Ok(all))
            }
            other => bail!("unexpected reply type {:?}", other as char),
        }
    }

    fn call(&mut self, args: &[&[u8]]) -> anyhow::Result<Result<Vec<u8>, String>> {
        let mut buf = Vec::new();
        Conn::encode(&mut buf, args);
        self.w.write_all(&buf)?;
        self.reply()
    }
}

fn flag<T: std::str::FromStr>(args: &[String], name: &str, default: Option<T>) -> anyhow::Result<T>
where
    T::Err: std::fmt::Display,
{
    match args.iter().position(|a| a == name) {
        Some(i) => {
            let v = args
                .get(i + 1)
                .with_context(|| format!("{name} needs a value"))?;
            v.parse().map_err(|e| anyhow::anyhow!("{name} {v}: {e}"))
        }
        None => default.with_context(|| format!("{name} is required")),
    }
}

fn ports(args: &[String]) -> anyhow::Result<Vec<u16>> {
    let list: String = flag(args, "--ports", None)?;
    list.split(',')
        .map(|p| p.parse().with_context(|| format!("port {p}")))
        .collect()
}

fn load(args: &[String]) -> anyhow::Result<()> {
    let ports = ports(args)?;
    let keys: u64 = flag(args, "--keys", None)?;
    let size: usize = flag(args, "--value-size", Some(100))?;
    let pipeline: u64 = flag(args, "--pipeline", Some(500))?;
    let started = Instant::now();
    let threads: Vec<_> = ports
        .iter()
        .enumerate()
        .map(|(i, &port)| {
            let n = ports.len() as u64;
            std::thread::spawn(move || -> anyhow::Result<()> {
                let mut c = Conn::open(port)?;
                let value = vec![b'v'; size];
                let mine: Vec<u64> = (0..keys).filter(|k| k % n == i as u64).collect();
                for batch in mine.chunks(usize::try_from(pipeline)?) {
                    let mut buf = Vec::new();
                    for k in batch {
                        Conn::encode(&mut buf, &[b"SET", format!("key:{k}").as_bytes(), &value]);
                    }
                    c.w.write_all(&buf)?;
                    for k in batch {
                        if let Err(e) = c.reply()? {
                            bail!("SET key:{k}: {e}");
                        }
                    }
                }
                Ok(())
            })
        })
        .collect();
    for t in threads {
        t.join()
            .map_err(|_| anyhow::anyhow!("a loader panicked"))??;
    }
    let s = started.elapsed().as_secs_f64();
    println!(
        "loaded {keys} keys in {s:.1} s ({:.0} keys/s)",
        keys as f64 / s
    );
    Ok(())
}

fn foreground(args: &[String]) -> anyhow::Result<()> {
    let ports = ports(args)?;
    let keys: u64 = flag(args, "--keys", None)?;
    let rate: f64 = flag(args, "--rate", None)?;
    let conns: usize = flag(args, "--connections", Some(4))?;
    let size: usize = flag(args, "--value-size", Some(100))?;
    let stop: PathBuf = flag(args, "--stop-file", None)?;
    if rate <= 0.0 || conns == 0 {
        bail!("--rate and --connections must be positive");
    }
    let interval = Duration::from_secs_f64(conns as f64 / rate);
    let threads: Vec<_> = (0..conns)
        .map(|i| {
            let (port, stop) = (ports[i % ports.len()], stop.clone());
            std::thread::spawn(move || -> anyhow::Result<(Histogram<u64>, u64)> {
                let mut c = Conn::open(port)?;
                let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
                let mut errors = 0u64;
                let value = vec![b'f'; size];
                // A fixed seed per connection: runs draw the same keys.
                let mut x: u64 = 0x9E37_79B9_7F4A_7C15 ^ (i as u64 + 1);
                let start = Instant::now() + interval.mul_f64(i as f64 / conns as f64);
                let mut checked = Instant::now();
                for n in 0u64.. {
                    let due = start + interval.mul_f64(n as f64);
                    let now = Instant::now();
                    if due > now {
                        std::thread::sleep(due - now);
                    }
                    if checked.elapsed() > Duration::from_millis(50) {
                        if stop.exists() {
                            break;
                        }
                        checked = Instant::now();
                    }
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let key = format!("key:{}", x % keys);
                    let reply = if n % 2 == 0 {
                        c.call(&[b"GET", key.as_bytes()])?
                    } else {
                        c.call(&[b"SET", key.as_bytes(), &value])?
                    };
                    if reply.is_err() {
                        errors += 1;
                    }
                    let us = u64::try_from(due.elapsed().as_micros()).unwrap_or(u64::MAX);
                    h.saturating_record(us.max(1));
                }
                Ok((h, errors))
            })
        })
        .collect();
    let mut all = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let mut errors = 0;
    for t in threads {
        let (h, e) = t
            .join()
            .map_err(|_| anyhow::anyhow!("a client panicked"))??;
        all.add(&h)?;
        errors += e;
    }
    println!(
        "{} {errors} {} {} {} {}",
        all.len(),
        all.value_at_quantile(0.5),
        all.value_at_quantile(0.99),
        all.value_at_quantile(0.999),
        all.max()
    );
    Ok(())
}

fn add(args: &[String]) -> anyhow::Result<()> {
    let port: u16 = flag(args, "--port", None)?;
    let node: String = flag(args, "--node", None)?;
    let mut c = Conn::open(port)?;
    let started = Instant::now();
    if let Err(e) = c.call(&[b"KVSTORE", b"ADDNODE", node.as_bytes()])? {
        bail!("ADDNODE {node}: {e}");
    }
    let (mut streaming, mut past, mut grew) = (None, None, None);
    let (mut keys, mut seen) = (0u64, false);
    loop {
        let text = match c.call(&[b"KVSTORE", b"CHANGE"])? {
            Ok(t) => String::from_utf8_lossy(&t).into_owned(),
            Err(e) => bail!("KVSTORE CHANGE: {e}"),
        };
        let now = Instant::now();
        // The node polled may not have applied the change the leader committed yet: until
        // it shows the change once, `change:none` is the state before it.
        if text.starts_with("change:none") {
            if seen {
                past.get_or_insert(now);
                break;
            }
            if started.elapsed() > Duration::from_secs(60) {
                bail!("ADDNODE {node} said OK, but no change showed within 60 s");
            }
            std::thread::sleep(Duration::from_millis(10));
            continue;
        }
        seen = true;
        let field = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name))
                .unwrap_or("")
                .to_owned()
        };
        let step = field("step:");
        if step == "streaming" {
            streaming.get_or_insert(now);
        } else if streaming.is_some() {
            past.get_or_insert(now);
        }
        let k: u64 = field("keys_copied:").parse().unwrap_or(0);
        if k > keys {
            keys = k;
            grew = Some(now);
        }
        if started.elapsed() > Duration::from_secs(900) {
            bail!("the change did not finish in 900 s: {text}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let total = started.elapsed().as_secs_f64();
    let since = |t: Option<Instant>| match (streaming, t) {
        (Some(s), Some(t)) => t.saturating_duration_since(s).as_secs_f64(),
        _ => f64::NAN,
    };
    println!("{keys} {:.3} {:.3} {total:.3}", since(grew), since(past));
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("load") => load(&args),
        Some("fg") => foreground(&args),
        Some("add") => add(&args),
        _ => bail!("usage: rebalance_load load|fg|add ... (see the file's docs)"),
    }
}
