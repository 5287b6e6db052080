//! (limiter: being written.)
