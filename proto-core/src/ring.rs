//! (ring: being written.)
