//! Crash points for tests: `FERRY_2PC_FAILPOINT=NAME[:N]` kills the process
//! with SIGKILL the N-th time (default first) it passes the point NAME, as a
//! power cut or `kill -9` would: no destructors, no flushes.

/// The environment variable that arms the two-phase-commit failpoints.
pub const ENV: &str = "FERRY_2PC_FAILPOINT";

#[derive(Debug, Clone, Default)]
pub struct Failpoint {
    armed: Option<(String, u64)>,
    passes: u64,
}

impl Failpoint {
    /// Reads `FERRY_2PC_FAILPOINT`; unset or empty means disarmed.
    pub fn from_env() -> Failpoint {
        match std::env::var(ENV) {
            Ok(spec) if !spec.is_empty() => Failpoint::parse(&spec),
            _ => Failpoint::default(),
        }
    }

    pub fn parse(spec: &str) -> Failpoint {
        let (name, nth) = match spec.split_once(':') {
            Some((name, nth)) => (name, nth.parse().unwrap_or(1)),
            None => (spec, 1),
        };
        Failpoint { armed: Some((name.to_string(), nth.max(1))), passes: 0 }
    }

    pub fn is_armed(&self) -> bool {
        self.armed.is_some()
    }

    /// Passes the point `name`; dies here when it is the armed one.
    pub fn pass(&mut self, name: &str) {
        let Some((armed, nth)) = &self.armed else { return };
        if armed != name {
            return;
        }
        self.passes += 1;
        if self.passes == *nth {
            eprintln!("failpoint {name} (pass {nth}): killing the process");
            // SAFETY: kill(2) on our own pid has no memory-safety preconditions.
            unsafe {
                libc::kill(libc::getpid(), libc::SIGKILL);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_name_and_count() {
        let f = Failpoint::parse("between-commits:3");
        assert_eq!(f.armed, Some(("between-commits".to_string(), 3)));
        let mut f = Failpoint::parse("after-decision");
        assert_eq!(f.armed, Some(("after-decision".to_string(), 1)));
        // Passing another point never fires.
        f.pass("before-prepare");
        assert_eq!(f.passes, 0);
        assert!(!Failpoint::default().is_armed());
    }
}
