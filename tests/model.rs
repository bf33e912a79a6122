//! A model of the pool, checked step by step against the real thing.
//!
//! Random sequences of operations over several stores sharing one small
//! pool (4 instances, 4 memories of 1 MiB, 4 tables): new stores (some with
//! small per-store caps), instantiations of a few layouts with and without
//! images, memory and table grows by random (sometimes absurd) amounts,
//! writes, table sets, and dropped stores, under a limiter that refuses at
//! random and records every call. After every step the pool must agree
//! with a plain model: the result or error variant with its fields, the
//! limiter's calls and arguments, the pool's in-use, exhaustion and denial
//! counts, and every live memory's and table's size and contents (so a slot
//! a tenant gets reads exactly its image and zeroes beyond, whatever the
//! previous tenant left).
//!
//! The model itself is in `common/model`; this file holds the strategies
//! and the tests.

mod common;
use common::config::{self, Resets};
use common::model::{Knobs, LAYOUTS, Op, SLOT, run};

use proptest::prelude::*;

fn op() -> impl Strategy<Value = Op> {
    let pick = 0..8usize;
    let caps = prop_oneof![
        3 => Just(None),
        1 => (0..3usize, 0..4usize, 0..4usize).prop_map(Some),
    ];
    let mem_delta = prop_oneof![
        8 => 0..=3u64,
        4 => 0..=18u64,
        1 => Just(u64::MAX),
        1 => Just(1u64 << 48),
        1 => Just(65_536u64),
    ];
    let table_delta = prop_oneof![
        6 => 0..=40u32,
        2 => 0..=1100u32,
        1 => Just(u32::MAX),
    ];
    let deny_at = prop_oneof![3 => Just(None), 1 => (0..4usize).prop_map(Some)];
    prop_oneof![
        2 => caps.prop_map(|caps| Op::NewStore { caps }),
        5 => (pick.clone(), 0..LAYOUTS.len(), deny_at).prop_map(|(store, layout, deny_at)| {
            Op::Instantiate { store, layout, deny_at }
        }),
        3 => (pick.clone(), pick.clone(), mem_delta, prop::bool::weighted(0.2)).prop_map(
            |(store, mem, delta, deny)| Op::GrowMemory { store, mem, delta, deny }
        ),
        2 => (
            pick.clone(),
            pick.clone(),
            table_delta,
            prop_oneof![Just(0usize), any::<usize>()],
            prop::bool::weighted(0.2)
        )
            .prop_map(|(store, table, delta, init, deny)| Op::GrowTable {
                store,
                table,
                delta,
                init,
                deny
            }),
        3 => (pick.clone(), pick.clone(), any::<usize>(), 1..200_000usize, any::<u8>()).prop_map(
            |(store, mem, offset, len, byte)| Op::Write { store, mem, offset, len, byte }
        ),
        2 => (pick.clone(), pick.clone(), any::<u32>(), any::<usize>()).prop_map(
            |(store, table, index, value)| Op::SetTable { store, table, index, value }
        ),
        2 => pick.clone().prop_map(|store| Op::DropStore { store }),
        1 => pick.prop_map(|store| Op::Reset { store }),
    ]
}

/// The pool's reset knobs, chosen per case.
fn knobs() -> impl Strategy<Value = Knobs> {
    (
        prop::sample::select(vec![0, 4096, 64 << 10, 192 << 10, SLOT]),
        prop::sample::select(vec![0, 4096, 8192]),
        prop::sample::select(vec![1, 2, 5]),
        prop::sample::select(vec![0, 1, 100]),
        any::<bool>(),
        prop::sample::select(config::ALL_SHAPES.to_vec()),
    )
        .prop_map(
            |(keep_resident, table_keep_resident, batch, max_unused_warm, guard_before, shape)| {
                Knobs {
                    resets: Resets {
                        keep_resident,
                        table_keep_resident,
                        batch,
                        shape,
                    },
                    max_unused_warm,
                    guard_before,
                }
            },
        )
}

proptest! {
    #![proptest_config(common::proptest_config(64))]

    #[test]
    fn pool_agrees_with_model(
        knobs in knobs(),
        ops in prop::collection::vec(op(), 1..100),
    ) {
        run(&knobs, &ops);
    }
}

proptest! {
    #![proptest_config(common::proptest_config(2000))]

    #[test]
    #[ignore = "long: 2,000 cases; run with --ignored"]
    fn pool_agrees_with_model_long(
        knobs in knobs(),
        ops in prop::collection::vec(op(), 1..200),
    ) {
        run(&knobs, &ops);
    }
}

/// A fixed sequence covering the main paths, so the model is exercised
/// even if the strategies drift: fill the pool, exhaust it, deny, grow past
/// the slot, release and reuse.
#[test]
fn model_fixed_sequence() {
    for shape in config::ALL_SHAPES {
        fixed_sequence(shape);
    }
}

fn fixed_sequence(shape: config::Shape) {
    let knobs = Knobs {
        resets: Resets {
            keep_resident: 64 << 10,
            table_keep_resident: 4096,
            batch: 2,
            shape,
        },
        max_unused_warm: 1,
        guard_before: true,
    };
    let mut ops = Vec::new();
    for s in 0..5 {
        ops.push(Op::NewStore { caps: None });
        ops.push(Op::Instantiate {
            store: s,
            layout: 4,
            deny_at: None,
        });
        ops.push(Op::Write {
            store: s,
            mem: 0,
            offset: 10,
            len: 1 << 20,
            byte: 0xEE,
        });
        ops.push(Op::GrowMemory {
            store: s,
            mem: 0,
            delta: 5,
            deny: false,
        });
        ops.push(Op::GrowTable {
            store: s,
            table: 1,
            delta: 100,
            init: 7,
            deny: false,
        });
    }
    ops.push(Op::GrowMemory {
        store: 0,
        mem: 0,
        delta: 1,
        deny: true,
    });
    ops.push(Op::GrowMemory {
        store: 0,
        mem: 0,
        delta: u64::MAX,
        deny: false,
    });
    for s in [1, 0] {
        ops.push(Op::DropStore { store: s });
    }
    ops.push(Op::NewStore {
        caps: Some((1, 1, 1)),
    });
    for layout in [9, 1, 1] {
        ops.push(Op::Instantiate {
            store: 3,
            layout,
            deny_at: Some(1),
        });
    }
    run(&knobs, &ops);
}
