//! One benchmark over many machines (docs/EVALUATION.md §1.4): `--shard K/N` runs the samples
//! whose position in the dataset's sorted sample list is K modulo N, and `gooddrag merge` joins the
//! shards' reports into the report an unsharded run writes. The split is a pure function of the
//! sample list, so every machine of a job array (SLURM's `SLURM_ARRAY_TASK_ID`, Kubernetes'
//! `JOB_COMPLETION_INDEX`, GNU parallel's `{%}`) computes the same partition without talking to
//! the others.

use std::fmt;
use std::str::FromStr;

use crate::error::{Error, Result};

/// The K-th of N disjoint shards (`0 ≤ K < N`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    /// K: this shard's number, from 0 (as array task ids and completion indices count).
    pub index: usize,
    /// N: how many shards the dataset is split into.
    pub count: usize,
}

impl Shard {
    /// Whether the sample at `position` in the sorted sample list belongs to this shard.
    pub fn contains(&self, position: usize) -> bool {
        position % self.count == self.index
    }

    /// The folder a shard's report goes to, under the run's output folder: `K-of-N`.
    pub fn folder_name(&self) -> String {
        format!("{}-of-{}", self.index, self.count)
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl FromStr for Shard {
    type Err = Error;

    /// `K/N` with `0 ≤ K < N`.
    fn from_str(s: &str) -> Result<Self> {
        let bad = |why: &str| {
            Error::InvalidInput(format!(
                "shard `{s}`: {why} (expected K/N with 0 ≤ K < N, e.g. 0/4 … 3/4)"
            ))
        };
        let (k, n) = s.split_once('/').ok_or_else(|| bad("no `/`"))?;
        let parse = |t: &str, what: &str| {
            t.trim()
                .parse::<usize>()
                .map_err(|_| bad(&format!("{what} `{t}` is not a whole number")))
        };
        let (index, count) = (parse(k, "K")?, parse(n, "N")?);
        if count == 0 {
            return Err(bad("N must be at least 1"));
        }
        if index >= count {
            return Err(bad("K must be below N (shards are numbered from 0)"));
        }
        Ok(Self { index, count })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_partition_every_position_exactly_once() {
        for count in 1..6 {
            let shards: Vec<Shard> = (0..count).map(|index| Shard { index, count }).collect();
            for position in 0..23 {
                let owners = shards.iter().filter(|s| s.contains(position)).count();
                assert_eq!(owners, 1, "position {position} of {count} shards");
            }
        }
    }

    #[test]
    fn parses_k_of_n_and_names_what_is_wrong() {
        assert_eq!(
            "2/5".parse::<Shard>().unwrap(),
            Shard { index: 2, count: 5 }
        );
        assert_eq!("0/1".parse::<Shard>().unwrap().folder_name(), "0-of-1");
        for (bad, says) in [
            ("3", "no `/`"),
            ("5/5", "below N"),
            ("1/0", "at least 1"),
            ("a/2", "`a` is not a whole number"),
            ("-1/2", "not a whole number"),
        ] {
            let e = bad.parse::<Shard>().unwrap_err().to_string();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }
}
