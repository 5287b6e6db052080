//! (hotkeys: being written.)
