//! (flight: being written.)
