//! (breaker: being written.)
