//! The static provider: a member list given up front, replaceable while the node runs.

use alloc::boxed::Box;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::time::Duration;
use std::sync::{Mutex, PoisonError};

use super::{Discovery, DiscoveryContext};

/// A fixed member list (advertised addresses, this node's own among them or not). With
/// [`StaticList::with_updates`], a [`StaticListUpdater`] replaces it while the node runs.
#[derive(Debug)]
pub struct StaticList {
    link: Arc<Mutex<Link>>,
}

/// Replaces the list of a [`StaticList`] provider: at once when its node runs, else when it
/// starts. Cheap to clone.
#[derive(Clone, Debug)]
pub struct StaticListUpdater {
    link: Arc<Mutex<Link>>,
}

/// The list and, while the provider runs, its node.
#[derive(Debug, Default)]
struct Link {
    members: Vec<String>,
    running: Option<Arc<DiscoveryContext>>,
}

impl StaticList {
    /// A provider that reports `members` once.
    pub fn new<I, S>(members: I) -> StaticList
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let members = members.into_iter().map(Into::into).collect();
        StaticList { link: Arc::new(Mutex::new(Link { members, running: None })) }
    }

    /// A provider that reports `members`, and the updater that replaces them later.
    pub fn with_updates<I, S>(members: I) -> (StaticList, StaticListUpdater)
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let list = StaticList::new(members);
        let updater = StaticListUpdater { link: list.link.clone() };
        (list, updater)
    }
}

impl StaticListUpdater {
    /// Replaces the member list.
    pub fn replace<I, S>(&self, members: I)
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut link = self.link.lock().unwrap_or_else(PoisonError::into_inner);
        link.members = members.into_iter().map(Into::into).collect();
        if let Some(context) = &link.running {
            context.set_members(link.members.clone());
        }
    }
}

impl Discovery for StaticList {
    fn kind(&self) -> &'static str {
        "static"
    }

    fn run(self: Box<Self>, context: DiscoveryContext) {
        let context = Arc::new(context);
        {
            let mut link = self.link.lock().unwrap_or_else(PoisonError::into_inner);
            context.set_members(link.members.clone());
            link.running = Some(context.clone());
        }
        while context.wait_stop(Duration::from_secs(3600)).is_none() {}
        self.link.lock().unwrap_or_else(PoisonError::into_inner).running = None;
    }
}
