//! When to renew the Vault token and when to log in again: a small state
//! machine driven by the time handed in, so every branch is unit-tested
//! without waiting (keystore.md §4.4).
//!
//! - A token with TTL 0 does not expire: nothing to do.
//! - Otherwise renew at 80 % of its TTL; a renewable token is renewed with
//!   renew-self, anything else (not renewable, renewal failed, or a 403
//!   from an expired token) means a fresh login.
//! - A failed login is retried every [`LOGIN_RETRY`].

use std::time::{Duration, Instant};

/// Pause between failed logins.
pub const LOGIN_RETRY: Duration = Duration::from_secs(3);

/// What to do now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Nothing until this instant (`None`: never).
    Wait(Option<Instant>),
    /// Extend the current token.
    Renew,
    /// Get a new token.
    Login,
}

/// The token's life as far as timing goes (the token itself lives elsewhere).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TokenLife {
    state: State,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// A token obtained or renewed at `at` that lives `ttl` (zero: forever).
    Valid { at: Instant, ttl: Duration, renewable: bool },
    /// No usable token; try to log in at `at`.
    NeedLogin { at: Instant },
}

impl TokenLife {
    /// After a successful login (or renewal) at `now`.
    pub fn obtained(now: Instant, ttl: Duration, renewable: bool) -> Self {
        Self { state: State::Valid { at: now, ttl, renewable } }
    }

    /// What to do at `now`.
    pub fn action(&self, now: Instant) -> Action {
        match self.state {
            State::Valid { ttl, .. } if ttl.is_zero() => Action::Wait(None),
            State::Valid { at, ttl, renewable } => {
                let due = at + ttl.mul_f64(0.8);
                if now < due {
                    Action::Wait(Some(due))
                } else if renewable {
                    Action::Renew
                } else {
                    Action::Login
                }
            }
            State::NeedLogin { at } if now < at => Action::Wait(Some(at)),
            State::NeedLogin { .. } => Action::Login,
        }
    }

    /// Renewal succeeded at `now` with a new TTL.
    pub fn renewed(&mut self, now: Instant, ttl: Duration, renewable: bool) {
        // A renewal that grants nothing more is as good as expired.
        self.state = if ttl.is_zero() {
            State::NeedLogin { at: now }
        } else {
            State::Valid { at: now, ttl, renewable }
        };
    }

    /// Renewal failed, or Vault said the token is no good (403): log in now.
    pub fn rejected(&mut self, now: Instant) {
        self.state = State::NeedLogin { at: now };
    }

    /// A login attempt failed at `now`: try again after [`LOGIN_RETRY`].
    pub fn login_failed(&mut self, now: Instant) {
        self.state = State::NeedLogin { at: now + LOGIN_RETRY };
    }

    /// Whether the token has certainly expired at `now`.
    pub fn expired(&self, now: Instant) -> bool {
        match self.state {
            State::Valid { at, ttl, .. } => !ttl.is_zero() && now >= at + ttl,
            State::NeedLogin { .. } => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn renews_at_eighty_percent() {
        let t0 = Instant::now();
        let life = TokenLife::obtained(t0, 40 * S, true);
        assert_eq!(life.action(t0), Action::Wait(Some(t0 + 32 * S)));
        assert_eq!(life.action(t0 + 31 * S), Action::Wait(Some(t0 + 32 * S)));
        assert_eq!(life.action(t0 + 32 * S), Action::Renew);
        assert!(!life.expired(t0 + 39 * S) && life.expired(t0 + 40 * S));
    }

    #[test]
    fn not_renewable_means_login() {
        let t0 = Instant::now();
        let life = TokenLife::obtained(t0, 10 * S, false);
        assert_eq!(life.action(t0 + 8 * S), Action::Login);
    }

    #[test]
    fn zero_ttl_lives_forever() {
        let t0 = Instant::now();
        let life = TokenLife::obtained(t0, Duration::ZERO, false);
        assert_eq!(life.action(t0 + 1_000_000 * S), Action::Wait(None));
        assert!(!life.expired(t0 + 1_000_000 * S));
    }

    #[test]
    fn renewal_and_failures() {
        let t0 = Instant::now();
        let mut life = TokenLife::obtained(t0, 40 * S, true);
        life.renewed(t0 + 32 * S, 40 * S, true);
        assert_eq!(life.action(t0 + 33 * S), Action::Wait(Some(t0 + 64 * S)));
        life.renewed(t0 + 64 * S, Duration::ZERO, true);
        assert_eq!(life.action(t0 + 64 * S), Action::Login, "a renewal granting 0 s");
        life.login_failed(t0 + 64 * S);
        assert_eq!(life.action(t0 + 65 * S), Action::Wait(Some(t0 + 64 * S + LOGIN_RETRY)));
        assert_eq!(life.action(t0 + 64 * S + LOGIN_RETRY), Action::Login);
        let mut life = TokenLife::obtained(t0, 40 * S, true);
        life.rejected(t0 + 5 * S);
        assert_eq!(life.action(t0 + 5 * S), Action::Login, "a 403 means log in now");
        assert!(life.expired(t0 + 5 * S));
    }
}
