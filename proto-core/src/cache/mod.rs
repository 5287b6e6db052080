//! (cache: being written.)
