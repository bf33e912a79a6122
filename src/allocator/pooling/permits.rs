//! [`Permits`]: a count with a limit (the pool's instances), spread over
//! shards so that two cores taking and giving back write no line in
//! common. Each shard holds some of the permits not taken, behind its own
//! lock on its own cache line; a thread takes from and gives back to its
//! home shard, and takes half of another shard's only when its own has
//! none. Exact: with every shard empty at a look, it looks again holding
//! every lock at once, so exactly `limit` takes succeed while none is
//! given back.

use super::index::thread_number;
use crossbeam_utils::CachePadded;
use parking_lot::Mutex;

pub(crate) struct Permits {
    shards: Box<[CachePadded<Mutex<u32>>]>,
    limit: u32,
}

impl Permits {
    /// `limit` permits over `shards` shards.
    pub fn new(limit: u32, shards: usize) -> Permits {
        let n = shards.max(1);
        let shards = (0..n)
            .map(|i| {
                let share = limit / n as u32 + u32::from((i as u32) < limit % n as u32);
                CachePadded::new(Mutex::new(share))
            })
            .collect();
        Permits { shards, limit }
    }

    /// Takes a permit; `false` when all `limit` are taken.
    pub fn take(&self) -> bool {
        let n = self.shards.len();
        let home = thread_number() % n;
        {
            let mut mine = self.shards[home].lock();
            if *mine > 0 {
                *mine -= 1;
                return true;
            }
        }
        for i in 1..n {
            let other = (home + i) % n;
            // Both locks, in shard order (as every look that holds more
            // than one takes them): the permits moved are never in neither.
            let (first, second) = (home.min(other), home.max(other));
            let (mut a, mut b) = (self.shards[first].lock(), self.shards[second].lock());
            let (mine, theirs) = if home < other {
                (&mut *a, &mut *b)
            } else {
                (&mut *b, &mut *a)
            };
            if *theirs > 0 {
                // Half of them come home, so that a thread that takes more
                // than it gives back does not come here every time.
                let moved = theirs.div_ceil(2);
                *theirs -= moved;
                *mine += moved - 1;
                return true;
            }
        }
        let mut all: Vec<_> = self.shards.iter().map(|s| s.lock()).collect();
        match all.iter_mut().find(|p| ***p > 0) {
            Some(p) => {
                **p -= 1;
                true
            }
            None => false,
        }
    }

    /// Gives `n` permits back.
    pub fn give_back(&self, n: u32) {
        *self.shards[thread_number() % self.shards.len()].lock() += n;
    }

    /// Permits taken now (exact when nothing moves).
    pub fn taken(&self) -> u32 {
        let free: u32 = self.shards.iter().map(|s| *s.lock()).sum();
        self.limit.saturating_sub(free)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exactly_the_limit_is_taken_wherever_permits_are() {
        let p = std::sync::Arc::new(Permits::new(5, 3));
        assert!((0..5).all(|_| p.take()));
        assert!(!p.take());
        assert_eq!(p.taken(), 5);
        // Given back on other threads: into their home shards.
        std::thread::scope(|s| {
            for _ in 0..5 {
                let p = p.clone();
                s.spawn(move || p.give_back(1));
            }
        });
        assert_eq!(p.taken(), 0);
        assert!((0..5).all(|_| p.take()), "every permit found");
        assert!(!p.take());
        p.give_back(2);
        assert_eq!(p.taken(), 3);
    }

    #[test]
    fn a_limit_of_zero_or_one_shard_holds() {
        let p = Permits::new(0, 4);
        assert!(!p.take());
        let p = Permits::new(3, 1);
        assert!((0..3).all(|_| p.take()) && !p.take());
    }
}
