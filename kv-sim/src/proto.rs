//! The simulated clients' protocol: one request line per connection, one answer line.
//! `SET k v` → `OK version` | `ERR msg`; `GET k` → `VAL v` | `NIL` | `ERR msg`; `REPAIR` (hint
//! handoff, then repair) → `REPAIRED ...` | `ERR msg`; `ADDNODE id` / `REMOVENODE id` (the
//! operator's: the node plans the change on its applied metadata and proposes it through its
//! raft) → `OK epoch` | `ERR msg`. RESP is not needed here: the
//! coordinator path under test is the same.

/// Longest line read from a connection.
pub(crate) const MAX_LINE: usize = 4096;

/// A parsed request line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Request {
    Set {
        key: Vec<u8>,
        value: Vec<u8>,
    },
    Get {
        key: Vec<u8>,
    },
    Repair,
    /// Start a membership change: `add` (true) or remove `node`.
    Change {
        add: bool,
        node: String,
    },
}

impl Request {
    /// The request of `line` (its newline included or not); `None` if it is not one.
    pub(crate) fn parse(line: &str) -> Option<Request> {
        let mut words = line.split_ascii_whitespace();
        let request = match words.next()? {
            "SET" => Request::Set {
                key: words.next()?.as_bytes().to_vec(),
                value: words.next()?.as_bytes().to_vec(),
            },
            "GET" => Request::Get {
                key: words.next()?.as_bytes().to_vec(),
            },
            "REPAIR" => Request::Repair,
            "ADDNODE" => Request::Change {
                add: true,
                node: words.next()?.to_string(),
            },
            "REMOVENODE" => Request::Change {
                add: false,
                node: words.next()?.to_string(),
            },
            _ => return None,
        };
        words.next().is_none().then_some(request)
    }
}

/// A parsed answer line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Reply {
    Ok(Option<u64>),
    Val(String),
    Nil,
    Err(String),
    Other(String),
}

impl Reply {
    pub(crate) fn parse(line: &str) -> Reply {
        let line = line.trim_end();
        match line.split_once(' ') {
            _ if line == "OK" => Reply::Ok(None),
            Some(("OK", v)) => Reply::Ok(v.parse().ok()),
            _ if line == "NIL" => Reply::Nil,
            Some(("VAL", v)) => Reply::Val(v.to_string()),
            Some(("ERR", e)) => Reply::Err(e.to_string()),
            _ => Reply::Other(line.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_parse() {
        assert_eq!(
            Request::parse("SET k1 c0-1\n"),
            Some(Request::Set {
                key: b"k1".to_vec(),
                value: b"c0-1".to_vec()
            })
        );
        assert_eq!(Request::parse("GET k1 extra"), None);
        assert_eq!(
            Request::parse("ADDNODE node4\n"),
            Some(Request::Change {
                add: true,
                node: "node4".into()
            })
        );
        assert_eq!(Request::parse("REMOVENODE"), None);
        assert_eq!(Request::parse(""), None);
        assert_eq!(Reply::parse("VAL c1-2\n"), Reply::Val("c1-2".into()));
        assert_eq!(
            Reply::parse("ERR no quorum"),
            Reply::Err("no quorum".into())
        );
        assert_eq!(Reply::parse("NIL"), Reply::Nil);
    }
}
