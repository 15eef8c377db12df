//! Broker failover (pure, no I/O): which broker of `uplink.broker` to try next. The delay
//! between attempts is the shared `cabinetd_backoff::Backoff`.

/// Which broker of the failover list to try next.
#[derive(Debug, Clone)]
pub struct Failover {
    brokers: usize,
    current: usize,
}

impl Failover {
    /// Start with the first of `brokers` (at least one).
    pub fn new(brokers: usize) -> Self {
        Failover {
            brokers: brokers.max(1),
            current: 0,
        }
    }

    /// Index of the broker to try.
    pub fn current(&self) -> usize {
        self.current
    }

    /// A connection attempt failed: try the next broker in order, wrapping around.
    pub fn attempt_failed(&mut self) {
        self.current = (self.current + 1) % self.brokers;
    }

    /// An established session was lost: prefer the first broker again.
    pub fn session_lost(&mut self) {
        self.current = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failover_walks_the_list_and_returns_to_the_primary_after_a_session() {
        let mut f = Failover::new(3);
        assert_eq!(f.current(), 0);
        f.attempt_failed();
        f.attempt_failed();
        assert_eq!(f.current(), 2);
        f.attempt_failed();
        assert_eq!(f.current(), 0);
        f.attempt_failed();
        f.session_lost();
        assert_eq!(f.current(), 0);
        let mut single = Failover::new(1);
        single.attempt_failed();
        assert_eq!(single.current(), 0);
    }
}
