//! `COMMAND DOCS`: each command's summary, group and arguments in Redis 7's reply shape, so
//! that `redis-cli` shows its hints (`SET key value [GET]`) for what kvstore supports.

use bytes::BytesMut;
use kv_resp::Encoder;

/// One command's (or subcommand's) documentation.
pub(crate) struct Doc {
    /// Redis's lower-case name (`client|id` for a subcommand).
    pub(crate) name: &'static str,
    summary: &'static str,
    since: &'static str,
    group: &'static str,
    args: &'static [Arg],
    subcommands: &'static [Doc],
}

impl Doc {
    /// The subcommands' documentation.
    pub(crate) fn subcommands(&self) -> &'static [Doc] {
        self.subcommands
    }
}

/// One argument, as Redis's `redisCommandArg`.
#[derive(Clone, Copy)]
pub(crate) struct Arg {
    name: &'static str,
    kind: &'static str,
    token: Option<&'static str>,
    optional: bool,
    multiple: bool,
    args: &'static [Arg],
}

const fn arg(name: &'static str, kind: &'static str) -> Arg {
    Arg {
        name,
        kind,
        token: None,
        optional: false,
        multiple: false,
        args: &[],
    }
}
const fn key() -> Arg {
    arg("key", "key")
}
const fn keys() -> Arg {
    Arg {
        multiple: true,
        ..key()
    }
}
const fn optional(a: Arg) -> Arg {
    Arg {
        optional: true,
        ..a
    }
}
const fn token(name: &'static str, token: &'static str, kind: &'static str) -> Arg {
    Arg {
        token: Some(token),
        ..arg(name, kind)
    }
}
const fn flag(name: &'static str, word: &'static str) -> Arg {
    optional(token(name, word, "pure-token"))
}

/// An optional choice of one of `args` (Redis's `oneof` block).
const fn oneof(name: &'static str, args: &'static [Arg]) -> Arg {
    Arg {
        name,
        kind: "oneof",
        token: None,
        optional: true,
        multiple: false,
        args,
    }
}

/// `EX seconds | PX milliseconds | EXAT unix-time-seconds | PXAT unix-time-milliseconds`.
const EXPIRATION_TIMES: [Arg; 4] = [
    token("seconds", "EX", "integer"),
    token("milliseconds", "PX", "integer"),
    token("unix-time-seconds", "EXAT", "unix-time"),
    token("unix-time-milliseconds", "PXAT", "unix-time"),
];

/// `SET`'s expiration: a time or `KEEPTTL`.
const SET_EXPIRATION: &[Arg] = &[
    EXPIRATION_TIMES[0],
    EXPIRATION_TIMES[1],
    EXPIRATION_TIMES[2],
    EXPIRATION_TIMES[3],
    token("keepttl", "KEEPTTL", "pure-token"),
];

/// `GETEX`'s expiration: a time or `PERSIST`.
const GETEX_EXPIRATION: &[Arg] = &[
    EXPIRATION_TIMES[0],
    EXPIRATION_TIMES[1],
    EXPIRATION_TIMES[2],
    EXPIRATION_TIMES[3],
    token("persist", "PERSIST", "pure-token"),
];

/// The `EXPIRE` family's `NX | XX | GT | LT`.
const EXPIRE_CONDITION: Arg = oneof(
    "condition",
    &[
        token("nx", "NX", "pure-token"),
        token("xx", "XX", "pure-token"),
        token("gt", "GT", "pure-token"),
        token("lt", "LT", "pure-token"),
    ],
);

const fn doc(
    name: &'static str,
    summary: &'static str,
    since: &'static str,
    group: &'static str,
    args: &'static [Arg],
) -> Doc {
    Doc {
        name,
        summary,
        since,
        group,
        args,
        subcommands: &[],
    }
}

/// Every command's documentation, in name order.
pub(crate) const DOCS: &[Doc] = &[
    doc(
        "auth",
        "Authenticates the connection.",
        "1.0.0",
        "connection",
        &[
            optional(arg("username", "string")),
            arg("password", "string"),
        ],
    ),
    Doc {
        subcommands: &[
            doc(
                "client|getname",
                "Returns the name of the connection.",
                "2.6.9",
                "connection",
                &[],
            ),
            doc(
                "client|id",
                "Returns the unique client ID of the connection.",
                "5.0.0",
                "connection",
                &[],
            ),
            doc(
                "client|info",
                "Returns information about the connection.",
                "6.2.0",
                "connection",
                &[],
            ),
            doc(
                "client|list",
                "Lists open connections.",
                "2.4.0",
                "connection",
                &[],
            ),
            doc(
                "client|setinfo",
                "Sets information specific to the client or connection.",
                "7.2.0",
                "connection",
                &[Arg {
                    name: "attr",
                    kind: "oneof",
                    token: None,
                    optional: false,
                    multiple: false,
                    args: &[
                        token("libname", "LIB-NAME", "string"),
                        token("libver", "LIB-VER", "string"),
                    ],
                }],
            ),
            doc(
                "client|setname",
                "Sets the connection name.",
                "2.6.9",
                "connection",
                &[arg("connection-name", "string")],
            ),
        ],
        ..doc(
            "client",
            "A container for client connection commands.",
            "2.4.0",
            "connection",
            &[],
        )
    },
    Doc {
        subcommands: &[
            doc(
                "command|info",
                "Returns information about one, multiple or all commands.",
                "2.8.13",
                "server",
                &[optional(Arg {
                    multiple: true,
                    ..arg("command-name", "string")
                })],
            ),
            doc(
                "command|count",
                "Returns a count of commands.",
                "2.8.13",
                "server",
                &[],
            ),
            doc(
                "command|docs",
                "Returns documentary information about one, multiple or all commands.",
                "7.0.0",
                "server",
                &[optional(Arg {
                    multiple: true,
                    ..arg("command-name", "string")
                })],
            ),
        ],
        ..doc(
            "command",
            "Returns detailed information about all commands.",
            "2.8.13",
            "server",
            &[],
        )
    },
    Doc {
        subcommands: &[doc(
            "config|get",
            "Returns the effective values of configuration parameters.",
            "2.0.0",
            "server",
            &[Arg {
                multiple: true,
                ..arg("parameter", "string")
            }],
        )],
        ..doc(
            "config",
            "A container for server configuration commands.",
            "2.0.0",
            "server",
            &[],
        )
    },
    doc(
        "dbsize",
        "Returns the number of keys in the database.",
        "1.0.0",
        "server",
        &[],
    ),
    doc(
        "del",
        "Deletes one or more keys.",
        "1.0.0",
        "generic",
        &[keys()],
    ),
    doc(
        "echo",
        "Returns the given string.",
        "1.0.0",
        "connection",
        &[arg("message", "string")],
    ),
    doc(
        "exists",
        "Determines whether one or more keys exist.",
        "1.0.0",
        "generic",
        &[keys()],
    ),
    doc(
        "expire",
        "Sets the expiration time of a key in seconds.",
        "1.0.0",
        "generic",
        &[key(), arg("seconds", "integer"), EXPIRE_CONDITION],
    ),
    doc(
        "expireat",
        "Sets the expiration time of a key to a Unix timestamp.",
        "1.2.0",
        "generic",
        &[
            key(),
            arg("unix-time-seconds", "unix-time"),
            EXPIRE_CONDITION,
        ],
    ),
    doc(
        "expiretime",
        "Returns the expiration time of a key as a Unix timestamp.",
        "7.0.0",
        "generic",
        &[key()],
    ),
    doc(
        "get",
        "Returns the string value of a key.",
        "1.0.0",
        "string",
        &[key()],
    ),
    doc(
        "getdel",
        "Returns the string value of a key after deleting the key.",
        "6.2.0",
        "string",
        &[key()],
    ),
    doc(
        "getex",
        "Returns the string value of a key after setting its expiration time.",
        "6.2.0",
        "string",
        &[key(), oneof("expiration", GETEX_EXPIRATION)],
    ),
    doc(
        "hello",
        "Handshakes with the Redis server.",
        "6.0.0",
        "connection",
        &[optional(Arg {
            name: "arguments",
            kind: "block",
            token: None,
            optional: true,
            multiple: false,
            args: &[
                arg("protover", "integer"),
                optional(Arg {
                    name: "auth",
                    kind: "block",
                    token: Some("AUTH"),
                    optional: true,
                    multiple: false,
                    args: &[arg("username", "string"), arg("password", "string")],
                }),
                optional(token("clientname", "SETNAME", "string")),
            ],
        })],
    ),
    doc(
        "info",
        "Returns information and statistics about the server.",
        "1.0.0",
        "server",
        &[optional(Arg {
            multiple: true,
            ..arg("section", "string")
        })],
    ),
    Doc {
        subcommands: &[
            doc(
                "kvstore|addnode",
                "Adds a node and streams it its ranges.",
                "0.1.0",
                "cluster",
                &[arg("id", "string")],
            ),
            doc(
                "kvstore|compact",
                "Compacts every node's log.",
                "0.1.0",
                "cluster",
                &[],
            ),
            doc(
                "kvstore|fail",
                "Takes a node down (cut off, or crashed).",
                "0.1.0",
                "cluster",
                &[arg("id", "string"), flag("crash", "CRASH")],
            ),
            doc(
                "kvstore|flush",
                "Makes every acknowledged write durable.",
                "0.1.0",
                "cluster",
                &[],
            ),
            doc(
                "kvstore|nodes",
                "Lists the nodes and their health.",
                "0.1.0",
                "cluster",
                &[],
            ),
            doc(
                "kvstore|recover",
                "Brings a down node back.",
                "0.1.0",
                "cluster",
                &[arg("id", "string")],
            ),
            doc(
                "kvstore|removenode",
                "Removes a node after streaming its ranges away.",
                "0.1.0",
                "cluster",
                &[arg("id", "string")],
            ),
            doc(
                "kvstore|repair",
                "Repairs every range by comparing replicas.",
                "0.1.0",
                "cluster",
                &[],
            ),
            doc(
                "kvstore|ring",
                "Shows the ring and each node's ownership.",
                "0.1.0",
                "cluster",
                &[],
            ),
            doc(
                "kvstore|stats",
                "Shows the data distribution and a change in progress.",
                "0.1.0",
                "cluster",
                &[],
            ),
        ],
        ..doc(
            "kvstore",
            "A container for kvstore cluster administration commands.",
            "0.1.0",
            "cluster",
            &[],
        )
    },
    doc(
        "mget",
        "Atomically returns the string values of one or more keys.",
        "1.0.0",
        "string",
        &[keys()],
    ),
    doc(
        "mset",
        "Atomically creates or modifies the string values of one or more keys.",
        "1.0.1",
        "string",
        &[Arg {
            name: "data",
            kind: "block",
            token: None,
            optional: false,
            multiple: true,
            args: &[key(), arg("value", "string")],
        }],
    ),
    doc(
        "persist",
        "Removes the expiration time of a key.",
        "2.2.0",
        "generic",
        &[key()],
    ),
    doc(
        "pexpire",
        "Sets the expiration time of a key in milliseconds.",
        "2.6.0",
        "generic",
        &[key(), arg("milliseconds", "integer"), EXPIRE_CONDITION],
    ),
    doc(
        "pexpireat",
        "Sets the expiration time of a key to a Unix milliseconds timestamp.",
        "2.6.0",
        "generic",
        &[
            key(),
            arg("unix-time-milliseconds", "unix-time"),
            EXPIRE_CONDITION,
        ],
    ),
    doc(
        "pexpiretime",
        "Returns the expiration time of a key as a Unix milliseconds timestamp.",
        "7.0.0",
        "generic",
        &[key()],
    ),
    doc(
        "ping",
        "Returns the server's liveliness response.",
        "1.0.0",
        "connection",
        &[optional(arg("message", "string"))],
    ),
    doc(
        "psetex",
        "Sets both string value and expiration time in milliseconds of a key. The key is \
         created if it doesn't exist.",
        "2.6.0",
        "string",
        &[
            key(),
            arg("milliseconds", "integer"),
            arg("value", "string"),
        ],
    ),
    doc(
        "pttl",
        "Returns the expiration time in milliseconds of a key.",
        "2.6.0",
        "generic",
        &[key()],
    ),
    doc("quit", "Closes the connection.", "1.0.0", "connection", &[]),
    doc(
        "reset",
        "Resets the connection.",
        "6.2.0",
        "connection",
        &[],
    ),
    doc(
        "scan",
        "Iterates over the key names in the database.",
        "2.8.0",
        "generic",
        &[
            arg("cursor", "integer"),
            optional(token("pattern", "MATCH", "pattern")),
            optional(token("count", "COUNT", "integer")),
            optional(token("type", "TYPE", "string")),
        ],
    ),
    doc(
        "select",
        "Changes the selected database.",
        "1.0.0",
        "connection",
        &[arg("index", "integer")],
    ),
    doc(
        "set",
        "Sets the string value of a key, ignoring its type. The key is created if it doesn't \
         exist (kvstore: no condition options).",
        "1.0.0",
        "string",
        &[
            key(),
            arg("value", "string"),
            flag("get", "GET"),
            oneof("expiration", SET_EXPIRATION),
        ],
    ),
    doc(
        "setex",
        "Sets the string value and expiration time of a key. Creates the key if it doesn't \
         exist.",
        "2.0.0",
        "string",
        &[key(), arg("seconds", "integer"), arg("value", "string")],
    ),
    doc(
        "strlen",
        "Returns the length of a string value.",
        "2.2.0",
        "string",
        &[key()],
    ),
    doc(
        "ttl",
        "Returns the expiration time in seconds of a key.",
        "1.0.0",
        "generic",
        &[key()],
    ),
    doc(
        "unlink",
        "Asynchronously deletes one or more keys.",
        "4.0.0",
        "generic",
        &[keys()],
    ),
];

/// Appends one command's documentation map.
pub(crate) fn encode(enc: Encoder, out: &mut BytesMut, d: &Doc) {
    let mut len = 3;
    if !d.args.is_empty() {
        len += 1;
    }
    if !d.subcommands.is_empty() {
        len += 1;
    }
    enc.map_header(out, len);
    for (k, v) in [
        ("summary", d.summary),
        ("since", d.since),
        ("group", d.group),
    ] {
        enc.bulk(out, k.as_bytes());
        enc.bulk(out, v.as_bytes());
    }
    if !d.args.is_empty() {
        enc.bulk(out, b"arguments");
        encode_args(enc, out, d.args);
    }
    if !d.subcommands.is_empty() {
        enc.bulk(out, b"subcommands");
        enc.map_header(out, d.subcommands.len());
        for sub in d.subcommands {
            enc.bulk(out, sub.name.as_bytes());
            encode(enc, out, sub);
        }
    }
}

fn encode_args(enc: Encoder, out: &mut BytesMut, args: &[Arg]) {
    enc.array_header(out, args.len());
    for a in args {
        let nested = a.kind == "oneof" || a.kind == "block";
        let flags: Vec<&str> = [("optional", a.optional), ("multiple", a.multiple)]
            .iter()
            .filter(|(_, on)| *on)
            .map(|(f, _)| *f)
            .collect();
        let len = 3 + usize::from(a.token.is_some()) + usize::from(!flags.is_empty());
        enc.map_header(out, len);
        enc.bulk(out, b"name");
        enc.bulk(out, a.name.as_bytes());
        enc.bulk(out, b"type");
        enc.bulk(out, a.kind.as_bytes());
        if !nested {
            enc.bulk(out, b"display_text");
            enc.bulk(out, a.name.as_bytes());
        }
        if let Some(t) = a.token {
            enc.bulk(out, b"token");
            enc.bulk(out, t.as_bytes());
        }
        if !flags.is_empty() {
            enc.bulk(out, b"flags");
            enc.set_header(out, flags.len());
            for f in flags {
                enc.simple(out, f.as_bytes());
            }
        }
        if nested {
            enc.bulk(out, b"arguments");
            encode_args(enc, out, a.args);
        }
    }
}
