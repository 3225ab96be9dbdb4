//! Node-wide occupancy, kept by each channel's home shard: how many shards have local
//! subscribers, so that `channel_occupied` and `channel_vacated` fire on the node-wide
//! transitions only.

use ahash::AHashMap;

/// Shards with subscribers, per (app, channel) homed here.
#[derive(Debug, Default)]
pub struct Occupancy {
    shards: AHashMap<(u32, Box<str>), u32>,
}

/// A node-wide change of a channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// The first shard got a subscriber.
    Occupied,
    /// The last shard lost its last subscriber.
    Vacated,
}

impl Occupancy {
    /// One shard's channel became occupied (`true`) or vacated (`false`).
    pub fn shard_changed(&mut self, app: u32, channel: &str, occupied: bool) -> Option<Transition> {
        let key = (app, Box::<str>::from(channel));
        if occupied {
            let count = self.shards.entry(key).or_insert(0);
            *count += 1;
            (*count == 1).then_some(Transition::Occupied)
        } else {
            let count = self.shards.get_mut(&key)?;
            *count -= 1;
            if *count > 0 {
                return None;
            }
            self.shards.remove(&key);
            Some(Transition::Vacated)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transitions_fire_on_the_first_and_last_shard() {
        let mut occupancy = Occupancy::default();
        assert_eq!(
            occupancy.shard_changed(0, "c", true),
            Some(Transition::Occupied)
        );
        assert_eq!(occupancy.shard_changed(0, "c", true), None);
        assert_eq!(occupancy.shard_changed(0, "c", false), None);
        assert_eq!(
            occupancy.shard_changed(0, "c", false),
            Some(Transition::Vacated)
        );
        assert_eq!(occupancy.shard_changed(0, "c", false), None);
        assert!(occupancy.shards.is_empty());
    }
}
