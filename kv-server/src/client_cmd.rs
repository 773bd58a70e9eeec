//! `CLIENT ID|SETNAME|GETNAME|INFO|LIST|SETINFO`, with Redis 7's replies.

use bytes::{Bytes, BytesMut};

use crate::commands::{c_str, error, wrong_arity};
use crate::session::Session;

/// Redis's text for a client name or library attribute with a byte outside `!`..=`~`.
const BAD_NAME: &str = "ERR Client names cannot contain spaces, newlines or special characters.";

/// Checks a client name as Redis's `validateClientName`: empty (no name) or printable ASCII
/// without spaces.
pub(crate) fn validate_name(name: &[u8]) -> Result<(), &'static str> {
    if name.iter().all(|&b| (b'!'..=b'~').contains(&b)) {
        Ok(())
    } else {
        Err(BAD_NAME)
    }
}

/// `CLIENT subcommand ...`.
pub(crate) fn client(session: &mut Session, args: &[Bytes], out: &mut BytesMut) {
    let sub = args[1].to_ascii_lowercase();
    let arity_ok = match &sub[..] {
        b"id" | b"getname" | b"info" => args.len() == 2,
        b"setname" => args.len() == 3,
        b"setinfo" => args.len() == 4,
        b"list" => true,
        _ => {
            let text = format!(
                "ERR unknown subcommand '{}'. Try CLIENT HELP.",
                String::from_utf8_lossy(c_str(&args[1], 128))
            );
            return error(session, out, &text);
        }
    };
    if !arity_ok {
        let name = format!("client|{}", String::from_utf8_lossy(&sub));
        return error(session, out, &wrong_arity(&name));
    }
    let enc = session.encoder();
    match &sub[..] {
        b"id" => enc.integer(out, i64::try_from(session.id).unwrap_or(i64::MAX)),
        b"getname" => match session.client.names().name {
            Some(name) => enc.bulk(out, &name),
            None => enc.null(out),
        },
        b"setname" => {
            if let Err(text) = validate_name(&args[2]) {
                return error(session, out, text);
            }
            let name = args[2].clone();
            session
                .client
                .update_names(|n| n.name = (!name.is_empty()).then_some(name));
            enc.simple(out, b"OK");
        }
        b"setinfo" => {
            let attr = args[2].to_ascii_lowercase();
            let value = args[3].clone();
            if attr != b"lib-name" && attr != b"lib-ver" {
                let text = format!(
                    "ERR Unrecognized option '{}'",
                    String::from_utf8_lossy(c_str(&args[2], usize::MAX))
                );
                return error(session, out, &text);
            }
            if validate_name(&value).is_err() {
                let text = format!(
                    "ERR {} cannot contain spaces, newlines or special characters.",
                    String::from_utf8_lossy(c_str(&args[2], usize::MAX))
                );
                return error(session, out, &text);
            }
            let value = (!value.is_empty()).then_some(value);
            session.client.update_names(|n| {
                if attr == b"lib-name" {
                    n.lib_name = value;
                } else {
                    n.lib_ver = value;
                }
            });
            enc.simple(out, b"OK");
        }
        b"info" => {
            let mut line = session
                .client
                .info_line(session.resp_version(), std::time::Instant::now());
            line.push(b'\n');
            enc.verbatim(out, *b"txt", &line);
        }
        // `list`
        _ => {
            if args.len() > 2 {
                return error(
                    session,
                    out,
                    "ERR CLIENT LIST options are not supported by kvstore",
                );
            }
            enc.verbatim(out, *b"txt", &session.shared.clients.list());
        }
    }
}
