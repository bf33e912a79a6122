//! `wasmtime_data` compared interleaved: module images on the crate's pool
//! against Wasmtime's pooling allocator, both in one process, in rounds
//! that alternate which goes first. Run with `INTERLEAVED=1` (criterion is
//! then skipped):
//!
//! ```sh
//! INTERLEAVED=1 cargo bench --features wasmtime-examples --bench wasmtime
//! INTERLEAVED=1 INTERLEAVED_SIZE=65536 INTERLEAVED_READS=1 cargo bench ...
//! ```
//!
//! Why: a process's slots and images land somewhere else in memory at
//! every run, and on this 2-vCPU guest that alone moves a row by up to
//! 15%, more than the differences these rows are about. Criterion times
//! each row in its own stretch, so a slow stretch or placement lands on
//! one side only. Here both sides share the process and every stretch;
//! the median of the rounds' ratios is printed, one line a case. For the
//! placement, run it in several processes and take the median of those
//! (`benches/README.md` does 20).

use crate::backend::{self, Kind};
use crate::{DATA_SIZES, SLOTS, data_module, data_request};
use instance_pool::wasmtime::PooledModule;
use std::time::Instant;

/// Rounds a case; instantiations a side a round.
const ROUNDS: usize = 40;
const PER_ROUND: usize = 5_000;

/// One side: an engine on one allocator, and the module ready to run.
struct Side {
    engine: wasmtime::Engine,
    /// The crate's pools, kept alive with the engine that uses them.
    _pools: Option<backend::Pools>,
    pooled: Option<PooledModule>,
    pre: wasmtime::InstancePre<()>,
}

impl Side {
    fn new(kind: Kind, wasm: &[u8]) -> Side {
        let (config, pools) = backend::engine_config(kind, SLOTS, SLOTS).expect("config");
        let engine = wasmtime::Engine::new(&config).expect("engine");
        let pooled = pools.as_ref().map(|(pool, _)| {
            PooledModule::new(pool, &engine, wasm, wasmtime::Module::from_binary)
                .expect("pooled module")
        });
        let module = match &pooled {
            Some(p) => p.module().clone(),
            None => wasmtime::Module::from_binary(&engine, wasm).expect("module"),
        };
        let pre = wasmtime::Linker::new(&engine)
            .instantiate_pre(&module)
            .expect("instantiate_pre");
        Side {
            engine,
            _pools: pools,
            pooled,
            pre,
        }
    }

    /// Mean nanoseconds of `n` iterations of the `wasmtime_data` row
    /// ([`data_request`]).
    fn time(&self, n: usize, size: usize, reads: bool) -> f64 {
        let start = Instant::now();
        for _ in 0..n {
            data_request(&self.engine, self.pooled.as_ref(), &self.pre, size, reads);
        }
        start.elapsed().as_nanos() as f64 / n as f64
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Runs the cases `INTERLEAVED_SIZE` (bytes) and `INTERLEAVED_READS`
/// (`0`/`1`) select, every size and both otherwise.
pub fn run() {
    let sizes: Vec<usize> = match std::env::var("INTERLEAVED_SIZE") {
        Ok(s) => vec![s.parse().expect("INTERLEAVED_SIZE: bytes")],
        Err(_) => DATA_SIZES.iter().map(|&(size, ..)| size).collect(),
    };
    let reads: Vec<bool> = match std::env::var("INTERLEAVED_READS") {
        Ok(r) => vec![r == "1"],
        Err(_) => vec![false, true],
    };
    for size in sizes {
        let wasm = data_module(size);
        let ours = Side::new(Kind::InstancePool, &wasm);
        let theirs = Side::new(Kind::WasmtimePooling, &wasm);
        for &reads in &reads {
            // Warm both: slots, images, caches.
            ours.time(4 * PER_ROUND, size, reads);
            theirs.time(4 * PER_ROUND, size, reads);
            let (mut a, mut b, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
            for round in 0..ROUNDS {
                let (x, y) = if round % 2 == 0 {
                    let x = ours.time(PER_ROUND, size, reads);
                    (x, theirs.time(PER_ROUND, size, reads))
                } else {
                    let y = theirs.time(PER_ROUND, size, reads);
                    (ours.time(PER_ROUND, size, reads), y)
                };
                a.push(x);
                b.push(y);
                ratios.push(x / y);
            }
            println!(
                "interleaved: module images / Wasmtime pooling{}, {} KiB: {:.3}x ({:.0} / {:.0} ns, medians of {ROUNDS} rounds)",
                if reads { " + reads" } else { "" },
                size >> 10,
                median(ratios),
                median(a),
                median(b),
            );
        }
    }
}
