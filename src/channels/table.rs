//! The local channel table: for each app and channel, the connections of this shard that are
//! subscribed. Fan-out reads it; subscribe and unsubscribe change it.

use ahash::AHashMap;

/// Local subscribers of one channel, keyed by the connection's per-shard counter.
#[derive(Debug)]
pub struct LocalChannel<C> {
    subscribers: AHashMap<u64, C>,
}

impl<C: Clone> LocalChannel<C> {
    /// Number of local subscribers.
    pub fn len(&self) -> usize {
        self.subscribers.len()
    }

    /// Whether no local connection is subscribed.
    pub fn is_empty(&self) -> bool {
        self.subscribers.is_empty()
    }

    /// The subscribers, in no particular order.
    pub fn subscribers(&self) -> impl Iterator<Item = &C> {
        self.subscribers.values()
    }
}

/// Channel name -> local subscribers, one map per app (indexed by the app's registry index).
#[derive(Debug)]
pub struct ChannelTable<C> {
    apps: Vec<AHashMap<Box<str>, LocalChannel<C>>>,
}

impl<C: Clone> ChannelTable<C> {
    /// An empty table for `apps` apps.
    pub fn new(apps: usize) -> Self {
        ChannelTable {
            apps: (0..apps).map(|_| AHashMap::new()).collect(),
        }
    }

    /// Makes room for apps added by a configuration reload.
    pub fn ensure_apps(&mut self, apps: usize) {
        while self.apps.len() < apps {
            self.apps.push(AHashMap::new());
        }
    }

    /// Adds `conn` (with per-shard id `id`) to `channel`; returns the local subscriber count after.
    pub fn subscribe(&mut self, app: u32, channel: &str, id: u64, conn: C) -> usize {
        self.ensure_apps(app as usize + 1);
        let channels = &mut self.apps[app as usize];
        let entry = match channels.get_mut(channel) {
            Some(entry) => entry,
            None => channels
                .entry(channel.into())
                .or_insert_with(|| LocalChannel {
                    subscribers: AHashMap::new(),
                }),
        };
        entry.subscribers.insert(id, conn);
        entry.subscribers.len()
    }

    /// Removes connection `id` from `channel`; returns the local subscriber count after (the
    /// channel is dropped from the table when it reaches 0).
    pub fn unsubscribe(&mut self, app: u32, channel: &str, id: u64) -> usize {
        let Some(channels) = self.apps.get_mut(app as usize) else {
            return 0;
        };
        let Some(entry) = channels.get_mut(channel) else {
            return 0;
        };
        entry.subscribers.remove(&id);
        let left = entry.subscribers.len();
        if left == 0 {
            channels.remove(channel);
        }
        left
    }

    /// The local subscribers of `channel`, if any (an app index this table has not seen yet has
    /// none).
    pub fn get(&self, app: u32, channel: &str) -> Option<&LocalChannel<C>> {
        self.apps.get(app as usize)?.get(channel)
    }

    /// The channels of `app` that have local subscribers.
    pub fn channels(&self, app: u32) -> impl Iterator<Item = (&str, &LocalChannel<C>)> {
        self.apps
            .get(app as usize)
            .into_iter()
            .flatten()
            .map(|(name, local)| (&**name, local))
    }

    /// Number of channels with local subscribers, over all apps.
    pub fn channel_count(&self) -> usize {
        self.apps.iter().map(|m| m.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscribe_unsubscribe_and_cleanup() {
        let mut table: ChannelTable<&'static str> = ChannelTable::new(2);
        assert_eq!(table.subscribe(0, "a", 1, "c1"), 1);
        assert_eq!(table.subscribe(0, "a", 2, "c2"), 2);
        assert_eq!(table.subscribe(0, "a", 2, "c2"), 2);
        assert_eq!(table.subscribe(1, "a", 3, "c3"), 1);
        assert_eq!(table.get(0, "a").unwrap().len(), 2);
        assert_eq!(table.unsubscribe(0, "a", 1), 1);
        assert_eq!(table.unsubscribe(0, "a", 9), 1);
        assert_eq!(table.unsubscribe(0, "a", 2), 0);
        assert!(table.get(0, "a").is_none());
        assert_eq!(table.channel_count(), 1);
        assert_eq!(table.unsubscribe(0, "nope", 1), 0);
    }

    #[test]
    fn unknown_app_indices_are_empty_not_a_panic() {
        let mut table: ChannelTable<&'static str> = ChannelTable::new(1);
        assert!(table.get(5, "a").is_none());
        assert_eq!(table.unsubscribe(5, "a", 1), 0);
        assert_eq!(table.channels(5).count(), 0);
        assert_eq!(table.subscribe(3, "a", 1, "c1"), 1);
        assert_eq!(table.get(3, "a").unwrap().len(), 1);
    }
}
