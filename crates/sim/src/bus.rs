//! The simulated bus: one log per topic and key, as Kafka keeps order per
//! partition and every event of an order has its order id as key; one
//! cursor per consuming service, topic and key, with a delivered position
//! and a stored ("committed") offset. A consumer that crashes goes back to
//! its stored offsets and gets everything after them again.

use std::collections::BTreeMap;

use choreo_events::AnyEvent;

use crate::world::Service;

/// Topic and key: one ordered log.
pub type LogId = (String, String);

/// A published message, decoded once when it was published.
#[derive(Clone, Debug)]
pub struct Record {
    pub event: AnyEvent,
}

#[derive(Clone, Copy, Debug, Default)]
pub struct Cursor {
    /// The next position to deliver.
    pub delivered: usize,
    /// The stored offset: where a restarted consumer starts.
    pub committed: usize,
    /// Retryable failures of the message at `delivered` in a row.
    pub failures: u32,
}

/// A message a service gave up on, with its reason.
#[derive(Clone, Debug)]
pub struct DeadLetter {
    pub service: Service,
    pub topic: String,
    pub key: String,
    pub position: usize,
    pub event_type: &'static str,
    pub reason: String,
}

/// One consumer's position on one log.
#[derive(Clone, Debug)]
struct Subscription {
    service: Service,
    log: usize,
    cursor: Cursor,
}

/// The logs in the order they were first published to, and the
/// subscriptions in the order they were made: plain vectors, so that the
/// per-step scan for pending deliveries is cheap and its order fixed.
#[derive(Debug, Default)]
pub struct Bus {
    ids: BTreeMap<LogId, usize>,
    logs: Vec<(LogId, Vec<Record>)>,
    subscriptions: Vec<Subscription>,
    pub dead_letters: Vec<DeadLetter>,
    pub published: usize,
}

/// A pending delivery: an index into the bus's subscriptions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pending(usize);

impl Bus {
    /// Appends `event` to its topic's log for `key`; every service that
    /// consumes the topic subscribes to the log when it is new.
    pub fn publish(&mut self, topic: &str, key: &str, event: AnyEvent) {
        let id = (topic.to_owned(), key.to_owned());
        let log = match self.ids.get(&id) {
            Some(log) => *log,
            None => {
                let log = self.logs.len();
                for service in Service::ALL {
                    if service.topics().contains(&topic) {
                        self.subscriptions.push(Subscription {
                            service,
                            log,
                            cursor: Cursor::default(),
                        });
                    }
                }
                self.ids.insert(id.clone(), log);
                self.logs.push((id, Vec::new()));
                log
            }
        };
        if let Some((_, records)) = self.logs.get_mut(log) {
            records.push(Record { event });
        }
        self.published += 1;
    }

    /// Every subscription with something left to deliver, in a fixed order.
    pub fn pending(&self) -> Vec<Pending> {
        self.subscriptions
            .iter()
            .enumerate()
            .filter(|(_, s)| s.cursor.delivered < self.logs.get(s.log).map_or(0, |(_, r)| r.len()))
            .map(|(i, _)| Pending(i))
            .collect()
    }

    /// Who gets `pending`, from which log, and the record at its cursor.
    pub fn next(&self, pending: Pending) -> Option<(Service, &LogId, usize, &Record)> {
        let sub = self.subscriptions.get(pending.0)?;
        let (id, records) = self.logs.get(sub.log)?;
        let position = sub.cursor.delivered;
        Some((sub.service, id, position, records.get(position)?))
    }

    /// The cursor of `pending`.
    pub fn cursor(&mut self, pending: Pending) -> Option<&mut Cursor> {
        self.subscriptions.get_mut(pending.0).map(|s| &mut s.cursor)
    }

    /// Everything published under `id`, in order.
    pub fn log(&self, id: &LogId) -> &[Record] {
        self.ids
            .get(id)
            .and_then(|log| self.logs.get(*log))
            .map_or(&[], |(_, records)| records.as_slice())
    }

    /// `service` crashed before storing its offsets: each of its cursors
    /// goes back to what it last stored. Returns how many messages will be
    /// delivered again.
    pub fn rewind(&mut self, service: Service) -> usize {
        let mut again = 0;
        for sub in self
            .subscriptions
            .iter_mut()
            .filter(|s| s.service == service)
        {
            let c = &mut sub.cursor;
            again += c.delivered - c.committed;
            c.delivered = c.committed;
            c.failures = 0;
        }
        again
    }
}
