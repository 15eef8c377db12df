//! The durable outbox (sled). Filled in by the outbox work.
