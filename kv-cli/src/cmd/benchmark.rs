//! `benchmark [ops] [--threads T] [--value-size B] [--distribution uniform|zipf]`: the
//! built-in benchmark ([`crate::bench`]).

use super::{ParseError, Run, Spec, err, usage};
use crate::bench::{self, BenchArgs};
use crate::session::{Outcome, Session, Target};

const USAGE: &str = "benchmark [ops] [--threads T] [--value-size B] [--distribution uniform|zipf]";

/// The table's entry.
pub const SPEC: Spec = Spec {
    names: &["benchmark"],
    aliases: &[],
    synopsis: USAGE,
    help: "writes then reads `ops` keys (default 100000) and reports\n\
           throughput and latency; its keys are removed afterwards\n\
           (in-process only: not available over --connect)",
    parse: |args| Ok(Box::new(Benchmark::parse(&args)?)),
};

/// `benchmark ...`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Benchmark(pub BenchArgs);

impl Benchmark {
    fn parse(args: &[String]) -> Result<Benchmark, ParseError> {
        let mut b = BenchArgs::default();
        let mut it = args.iter();
        let mut ops_seen = false;
        let number = |v: Option<&String>, what: &str, max: usize| -> Result<usize, ParseError> {
            let Some(v) = v else { return usage(USAGE) };
            match v.replace('_', "").parse::<usize>() {
                Ok(n) if (1..=max).contains(&n) => Ok(n),
                _ => err(format!(
                    "{what} must be a number from 1 to {max}, not {v:?}"
                )),
            }
        };
        while let Some(a) = it.next() {
            match a.as_str() {
                "--threads" => b.threads = number(it.next(), "--threads", 64)?,
                "--value-size" => b.value_size = number(it.next(), "--value-size", 1 << 20)?,
                "--distribution" => {
                    b.zipf = match it.next().map(String::as_str) {
                        Some("uniform") => false,
                        Some("zipf") => true,
                        _ => return usage(USAGE),
                    }
                }
                _ if !ops_seen && !a.starts_with("--") => {
                    b.ops = number(Some(a), "ops", 100_000_000)?;
                    ops_seen = true;
                }
                _ => return usage(USAGE),
            }
        }
        Ok(Benchmark(b))
    }
}

impl Run for Benchmark {
    fn run(&self, session: &Session) -> Outcome {
        let cluster = match &session.target {
            Target::Local(cluster) => cluster,
            Target::Remote(_) => {
                return Outcome::failed(session.style.fail(
                    "benchmark is not available over --connect: it measures the cluster in this \
                     process; measure a server with redis-benchmark (see the README)",
                ));
            }
        };
        match bench::run(cluster, self.0) {
            Ok(report) => Outcome::lines(report.lines()),
            Err(e) => Outcome::failed(session.style.fail(format!("benchmark: {e:#}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cmd::words;

    fn p(s: &str) -> Result<BenchArgs, ParseError> {
        Benchmark::parse(&words(s)).map(|b| b.0)
    }

    fn e(s: &str) -> String {
        p(s).unwrap_err().0
    }

    #[test]
    fn benchmark_arguments() {
        assert_eq!(p(""), Ok(BenchArgs::default()));
        assert_eq!(
            p("5000 --threads 2 --value-size 10 --distribution zipf"),
            Ok(BenchArgs {
                ops: 5000,
                threads: 2,
                value_size: 10,
                zipf: true
            })
        );
        assert_eq!(p("1_000").map(|b| b.ops), Ok(1000));
        assert!(e("0").contains("from 1"));
        assert!(e("10 20").starts_with("usage"));
        assert!(e("--threads").starts_with("usage"));
        assert!(e("--distribution pareto").starts_with("usage"));
    }
}
