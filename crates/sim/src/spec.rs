//! What identifies one schedule: its seed, and when shrunk, which of the
//! seed's orders it keeps, which faults it still injects and after how
//! many steps it turns calm. Written and read as one token, the value of
//! `CHOREO_SIM_SEED`: `42`, or shrunk `42:orders=0,3:faults=dup,crash:chaos=17`.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

/// The faults a schedule may inject; all on unless shrinking turned them off.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Faults {
    /// A delivery is applied and delivered again (the offset was not yet
    /// stored when the consumer moved on).
    pub duplicate: bool,
    /// A consumer restarts from its stored offsets.
    pub rewind: bool,
    /// A handler runs but its service dies before the commit.
    pub crash_before_commit: bool,
    /// The relay publishes (part of) a batch and dies before marking it.
    pub relay_crash: bool,
    /// The clock jumps, so deadlines pass at any moment.
    pub time_jump: bool,
    /// A message is skipped, never delivered. Not a fault of Kafka and not
    /// in [`Faults::ALL`]: it exists to show that the simulation notices a
    /// broken promise (its own test turns it on).
    pub lose: bool,
}

impl Faults {
    pub const ALL: Faults = Faults {
        duplicate: true,
        rewind: true,
        crash_before_commit: true,
        relay_crash: true,
        time_jump: true,
        lose: false,
    };

    const NAMES: [&'static str; 6] = ["dup", "rewind", "crash", "relay", "time", "lose"];

    fn flags(&mut self) -> [&mut bool; 6] {
        [
            &mut self.duplicate,
            &mut self.rewind,
            &mut self.crash_before_commit,
            &mut self.relay_crash,
            &mut self.time_jump,
            &mut self.lose,
        ]
    }

    /// Each fault that is on, as a copy with only that one turned off.
    pub fn each_without_one(&self) -> Vec<Faults> {
        (0..Self::NAMES.len())
            .filter_map(|i| {
                let mut fewer = *self;
                let flag = fewer.flags().into_iter().nth(i)?;
                if !*flag {
                    return None;
                }
                *flag = false;
                Some(fewer)
            })
            .collect()
    }
}

impl fmt::Display for Faults {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut copy = *self;
        let on: Vec<&str> = Self::NAMES
            .iter()
            .zip(copy.flags())
            .filter(|(_, on)| **on)
            .map(|(name, _)| *name)
            .collect();
        if on.is_empty() {
            f.write_str("none")
        } else {
            f.write_str(&on.join(","))
        }
    }
}

impl FromStr for Faults {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let mut faults = Faults {
            duplicate: false,
            rewind: false,
            crash_before_commit: false,
            relay_crash: false,
            time_jump: false,
            lose: false,
        };
        for name in s.split(',').filter(|n| !n.is_empty() && *n != "none") {
            let i = Self::NAMES.iter().position(|n| *n == name).ok_or_else(|| {
                format!("unknown fault {name:?} (known: {})", Self::NAMES.join(", "))
            })?;
            if let Some(flag) = faults.flags().into_iter().nth(i) {
                *flag = true;
            }
        }
        Ok(faults)
    }
}

/// One schedule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Spec {
    pub seed: u64,
    /// The seed's orders kept, by index; `None` keeps all.
    pub orders: Option<BTreeSet<usize>>,
    pub faults: Faults,
    /// Steps with faults before the schedule turns calm; `None` lets the
    /// seed choose.
    pub chaos: Option<u64>,
    /// Varies the schedule's steps but not its scenario. Shrinking tries
    /// other salts: without an order, the same stream makes other choices,
    /// and another salt may find the failure again.
    pub salt: u64,
}

impl Spec {
    /// The whole schedule of `seed`.
    pub fn of(seed: u64) -> Spec {
        Spec {
            seed,
            orders: None,
            faults: Faults::ALL,
            chaos: None,
            salt: 0,
        }
    }
}

impl fmt::Display for Spec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.seed)?;
        if let Some(orders) = &self.orders {
            let list: Vec<String> = orders.iter().map(usize::to_string).collect();
            write!(f, ":orders={}", list.join(","))?;
        }
        if self.faults != Faults::ALL {
            write!(f, ":faults={}", self.faults)?;
        }
        if let Some(chaos) = self.chaos {
            write!(f, ":chaos={chaos}")?;
        }
        if self.salt != 0 {
            write!(f, ":salt={}", self.salt)?;
        }
        Ok(())
    }
}

impl FromStr for Spec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let mut parts = s.trim().split(':');
        let seed = parts.next().unwrap_or_default();
        let seed = seed
            .parse()
            .map_err(|_| format!("seed {seed:?} is not a number (expected e.g. 42 or 42:orders=0,3:faults=dup:chaos=17)"))?;
        let mut spec = Spec::of(seed);
        for part in parts {
            let (name, value) = part
                .split_once('=')
                .ok_or_else(|| format!("{part:?} is not name=value"))?;
            match name {
                "orders" => {
                    let orders = value
                        .split(',')
                        .filter(|v| !v.is_empty())
                        .map(|v| {
                            v.parse()
                                .map_err(|_| format!("order index {v:?} is not a number"))
                        })
                        .collect::<Result<_, _>>()?;
                    spec.orders = Some(orders);
                }
                "faults" => spec.faults = value.parse()?,
                "chaos" => {
                    spec.chaos = Some(
                        value
                            .parse()
                            .map_err(|_| format!("chaos {value:?} is not a number"))?,
                    );
                }
                "salt" => {
                    spec.salt = value
                        .parse()
                        .map_err(|_| format!("salt {value:?} is not a number"))?;
                }
                other => {
                    return Err(format!(
                        "unknown part {other:?} (known: orders, faults, chaos, salt)"
                    ))
                }
            }
        }
        Ok(spec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spec_reads_back_what_it_writes() {
        for text in [
            "42",
            "42:orders=0,3",
            "7:orders=:faults=dup,crash:chaos=17",
            "9:faults=none",
            "3:salt=5",
        ] {
            let spec: Spec = text.parse().unwrap();
            assert_eq!(spec.to_string().parse::<Spec>().unwrap(), spec, "{text}");
        }
        assert_eq!("42".parse::<Spec>().unwrap(), Spec::of(42));
        let shrunk: Spec = "42:orders=1:faults=relay:chaos=3".parse().unwrap();
        assert_eq!(shrunk.orders, Some([1].into()));
        assert!(shrunk.faults.relay_crash && !shrunk.faults.duplicate);
        assert_eq!(shrunk.chaos, Some(3));
    }

    #[test]
    fn bad_tokens_say_what_is_wrong() {
        assert!("x".parse::<Spec>().unwrap_err().contains("not a number"));
        assert!("1:faults=fire"
            .parse::<Spec>()
            .unwrap_err()
            .contains("unknown fault"));
        assert!("1:colour=red"
            .parse::<Spec>()
            .unwrap_err()
            .contains("unknown part"));
    }

    #[test]
    fn each_without_one_turns_off_one_fault_each() {
        let fewer = Faults::ALL.each_without_one();
        assert_eq!(fewer.len(), 5);
        assert!(fewer.iter().all(|f| f.to_string().split(',').count() == 4));
        assert!("dup".parse::<Faults>().unwrap().each_without_one()[0].to_string() == "none");
    }
}
