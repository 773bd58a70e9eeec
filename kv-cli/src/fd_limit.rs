//! Fitting `--maxclients` to the open-files limit, as Redis does: each client is a file
//! descriptor, so the soft `RLIMIT_NOFILE` is raised (up to the hard limit) to hold every
//! client plus the store's own files; when it cannot be, `maxclients` is lowered to what fits
//! and the user is told. Otherwise clients past the limit would not be refused with
//! `-ERR max number of clients reached`: the server could not even accept them.

use std::io;

/// Descriptors kept for the store beyond those already open when the server starts (new log
/// segments, hint files, compaction, the client refused over the cap).
const HEADROOM: u64 = 64;

/// What to do about the limit.
#[derive(Debug, PartialEq, Eq)]
struct Plan {
    /// The soft limit to ask for (`None`: keep it).
    raise_to: Option<u64>,
    /// The clients that fit.
    max_clients: usize,
}

/// Plans for `max_clients` clients beside `reserved` descriptors, under the current `soft`
/// and `hard` limits.
fn plan(max_clients: usize, reserved: u64, soft: u64, hard: u64) -> Plan {
    let want = reserved.saturating_add(max_clients as u64);
    if want <= soft {
        return Plan {
            raise_to: None,
            max_clients,
        };
    }
    let limit = want.min(hard);
    let fits = usize::try_from(limit.saturating_sub(reserved)).unwrap_or(usize::MAX);
    Plan {
        raise_to: (limit > soft).then_some(limit),
        max_clients: max_clients.min(fits),
    }
}

/// Raises the open-files limit for `max_clients` clients beside the descriptors open now;
/// returns the clients that fit and, if that is fewer than asked, a warning for the user.
///
/// # Errors
///
/// The limit cannot be read, or no client fits beside the store's descriptors.
pub fn fit(max_clients: usize) -> anyhow::Result<(usize, Option<String>)> {
    let open_now = std::fs::read_dir("/proc/self/fd").map_or(HEADROOM, |d| d.count() as u64);
    let reserved = open_now + HEADROOM;
    let (soft, hard) = get()?;
    let mut plan = plan(max_clients, reserved, soft, hard);
    if let Some(limit) = plan.raise_to
        && let Err(e) = set(limit, hard)
    {
        // Keep the current limit and fit the clients under it.
        plan = Plan {
            raise_to: None,
            max_clients: max_clients
                .min(usize::try_from(soft.saturating_sub(reserved)).unwrap_or(usize::MAX)),
        };
        if plan.max_clients == 0 {
            anyhow::bail!("cannot raise the open-files limit ({soft}) for any client: {e}");
        }
    }
    if plan.max_clients == 0 {
        anyhow::bail!(
            "the open-files limit ({hard}) leaves no descriptor for a client (the store needs {reserved})"
        );
    }
    let warning = (plan.max_clients < max_clients).then(|| {
        format!(
            "warning: --maxclients {max_clients} lowered to {} to fit the open-files limit \
             (ulimit -n); raise it to serve more clients",
            plan.max_clients
        )
    });
    Ok((plan.max_clients, warning))
}

fn get() -> io::Result<(u64, u64)> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid, writable `rlimit` that getrlimit fills in.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((limit.rlim_cur, limit.rlim_max))
}

fn set(soft: u64, hard: u64) -> io::Result<()> {
    let limit = libc::rlimit {
        rlim_cur: soft,
        rlim_max: hard,
    };
    // SAFETY: `limit` is a valid `rlimit` that setrlimit only reads.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_limit_that_holds_every_client_is_kept() {
        assert_eq!(
            plan(10_000, 100, 20_000, 20_000),
            Plan {
                raise_to: None,
                max_clients: 10_000
            }
        );
    }

    #[test]
    fn a_low_soft_limit_is_raised_to_what_is_needed() {
        assert_eq!(
            plan(10_000, 100, 1024, 524_288),
            Plan {
                raise_to: Some(10_100),
                max_clients: 10_000
            }
        );
    }

    #[test]
    fn past_the_hard_limit_the_clients_are_lowered_to_fit() {
        assert_eq!(
            plan(10_000, 100, 1024, 4096),
            Plan {
                raise_to: Some(4096),
                max_clients: 3996
            }
        );
        assert_eq!(
            plan(10_000, 100, 4096, 4096),
            Plan {
                raise_to: None,
                max_clients: 3996
            }
        );
    }

    #[test]
    fn the_current_limit_is_readable_and_fits_a_client() {
        let (soft, hard) = get().unwrap();
        assert!(soft <= hard);
        let (clients, _) = fit(1).unwrap();
        assert_eq!(clients, 1);
    }
}
