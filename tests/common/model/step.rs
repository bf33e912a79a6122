//! One step of the world: an operation applied to the pool and to the
//! model, and the check that they agree.

use super::world::{ModelMemory, ModelStore, ModelTable, RealStore, World};
use super::{LAYOUTS, Op, SLOT_PAGES, TABLE_ELEMENTS, TOTAL, unsupported};
use crate::common::limiter::{self, Call, Outcome, Recorder};
use crate::common::{pick, resource_index};
use instance_pool::*;
use std::collections::VecDeque;

const PAGE: usize = WASM_PAGE_SIZE;

impl World {
    /// Applies `op` to both sides and checks they agree.
    pub fn step(&mut self, op: &Op) {
        match *op {
            Op::NewStore { caps } => {
                let caps = caps.unwrap_or((10_000, 10_000, 10_000));
                let (instances, memories, tables) = caps;
                let recorder = Recorder::with_caps(instances, memories, tables);
                let store = limiter::store_with(&self.pool, recorder);
                self.real.push(RealStore {
                    store,
                    memories: Vec::new(),
                    tables: Vec::new(),
                });
                self.model.push(ModelStore {
                    caps,
                    instances: 0,
                    memories: Vec::new(),
                    tables: Vec::new(),
                });
            }
            Op::Instantiate {
                store,
                layout,
                deny_at,
            } => {
                let Some(s) = self.pick_store(store) else {
                    return;
                };
                let recorder = self.real[s].store.data_mut();
                recorder.calls.clear();
                match deny_at {
                    Some(n) => recorder.deny_nth(n),
                    None => recorder.script.clear(),
                }
                let script = recorder.script.clone();
                let (expected, calls) = self.model_instantiate(s, layout, &script);
                let real = &mut self.real[s];
                let got = match real.store.instantiate(&self.layouts[layout]) {
                    Ok(inst) => {
                        let spec = &LAYOUTS[layout];
                        for i in 0..spec.mems.len() {
                            real.memories.push(inst.memory(&real.store, i).unwrap());
                        }
                        for i in 0..spec.tables.len() {
                            real.tables.push(inst.table(&real.store, i).unwrap());
                        }
                        assert!(inst.memory(&real.store, spec.mems.len()).is_none());
                        assert!(inst.table(&real.store, spec.tables.len()).is_none());
                        Outcome::Ok(0)
                    }
                    Err(e) => Outcome::of_error(&e),
                };
                assert_eq!(got, expected, "instantiate layout {layout}");
                assert_eq!(real.store.data().calls, calls, "limiter calls");
            }
            Op::GrowMemory {
                store,
                mem,
                delta,
                deny,
            } => {
                let Some(s) = self.pick_store(store) else {
                    return;
                };
                let Some(i) = pick(mem, self.model[s].memories.len()) else {
                    return;
                };
                let m = &mut self.model[s].memories[i];
                let current = m.bytes.len();
                let pages = (current / PAGE) as u64;
                let mut calls = Vec::new();
                let expected = if delta == 0 {
                    Outcome::Ok(pages)
                } else {
                    let desired = pages
                        .checked_add(delta)
                        .and_then(|p| p.checked_mul(PAGE as u64))
                        .and_then(|b| usize::try_from(b).ok())
                        .unwrap_or(usize::MAX & !(PAGE - 1));
                    calls.push(Call::MemoryGrowing(current, desired, Some(m.maximum)));
                    if deny {
                        self.counts.denials += 1;
                        Outcome::LimiterDenied(Resource::Memory, desired)
                    } else if desired > m.maximum {
                        let o = Outcome::MaximumExceeded(Resource::Memory, desired, m.maximum);
                        calls.push(Call::MemoryGrowFailed(o.clone()));
                        o
                    } else {
                        m.bytes.resize(desired, 0);
                        Outcome::Ok(pages)
                    }
                };
                let real = &mut self.real[s];
                real.store.data_mut().script = VecDeque::from([!deny]);
                real.store.data_mut().calls.clear();
                let got = Outcome::of(real.memories[i].grow(&mut real.store, delta));
                assert_eq!(got, expected, "grow memory {i} by {delta}");
                assert_eq!(real.store.data().calls, calls, "limiter calls");
            }
            Op::GrowTable {
                store,
                table,
                delta,
                init,
                deny,
            } => {
                let Some(s) = self.pick_store(store) else {
                    return;
                };
                let Some(i) = pick(table, self.model[s].tables.len()) else {
                    return;
                };
                let t = &mut self.model[s].tables[i];
                let current = t.elements.len() as u32;
                let mut calls = Vec::new();
                let expected = if delta == 0 {
                    Outcome::Ok(current.into())
                } else {
                    let desired = current.saturating_add(delta);
                    calls.push(Call::TableGrowing(current, desired, Some(t.maximum)));
                    if deny {
                        self.counts.denials += 1;
                        Outcome::LimiterDenied(Resource::Table, desired as usize)
                    } else if desired > t.maximum {
                        let o = Outcome::MaximumExceeded(
                            Resource::Table,
                            desired as usize,
                            t.maximum as usize,
                        );
                        calls.push(Call::TableGrowFailed(o.clone()));
                        o
                    } else {
                        t.elements.resize(desired as usize, init);
                        Outcome::Ok(current.into())
                    }
                };
                let real = &mut self.real[s];
                real.store.data_mut().script = VecDeque::from([!deny]);
                real.store.data_mut().calls.clear();
                let got = Outcome::of(real.tables[i].grow(&mut real.store, delta, init));
                assert_eq!(got, expected, "grow table {i} by {delta}");
                assert_eq!(real.store.data().calls, calls, "limiter calls");
            }
            Op::Write {
                store,
                mem,
                offset,
                len,
                byte,
            } => {
                let Some(s) = self.pick_store(store) else {
                    return;
                };
                let Some(i) = pick(mem, self.model[s].memories.len()) else {
                    return;
                };
                let bytes = &mut self.model[s].memories[i].bytes;
                if bytes.is_empty() {
                    return;
                }
                let start = offset % bytes.len();
                let end = start + len.min(bytes.len() - start);
                bytes[start..end].fill(byte);
                let real = &mut self.real[s];
                real.memories[i].data_mut(&mut real.store)[start..end].fill(byte);
            }
            Op::SetTable {
                store,
                table,
                index,
                value,
            } => {
                let Some(s) = self.pick_store(store) else {
                    return;
                };
                let Some(i) = pick(table, self.model[s].tables.len()) else {
                    return;
                };
                let elements = &mut self.model[s].tables[i].elements;
                let size = elements.len() as u32;
                // Mostly in bounds, sometimes just past, sometimes far past.
                let index = match index % 8 {
                    0 => size.saturating_add(index % 3),
                    1 => index,
                    _ if size > 0 => index % size,
                    _ => index % 2,
                };
                let expected = match elements.get_mut(index as usize) {
                    Some(e) => {
                        *e = value;
                        Outcome::Ok(0)
                    }
                    None => Outcome::OutOfBounds(index, size),
                };
                let real = &mut self.real[s];
                let got = Outcome::of(
                    real.tables[i]
                        .set(&mut real.store, index, value)
                        .map(|()| 0u64),
                );
                assert_eq!(got, expected, "set table {i}[{index}]");
                let read = real.tables[i].get(&real.store, index);
                assert_eq!(read, elements.get(index as usize).copied());
            }
            Op::DropStore { store } => {
                let Some(s) = self.pick_store(store) else {
                    return;
                };
                let m = self.model.remove(s);
                self.counts.instances -= m.instances as u32;
                self.counts.memories -= m.memories.len() as u32;
                self.counts.tables -= m.tables.len() as u32;
                drop(self.real.remove(s));
            }
            Op::Reset { store } => {
                let Some(s) = self.pick_store(store) else {
                    return;
                };
                let model = &mut self.model[s];
                for m in &mut model.memories {
                    m.bytes.clone_from(&m.initial);
                }
                for t in &mut model.tables {
                    t.elements = vec![0; t.minimum as usize];
                }
                let real = &mut self.real[s];
                real.store.data_mut().calls.clear();
                real.store.reset().unwrap();
                assert_eq!(real.store.data().calls, [], "reset asked the limiter");
            }
        }
        self.check();
    }

    fn pick_store(&self, store: usize) -> Option<usize> {
        pick(store, self.model.len())
    }

    /// What instantiating `layout` in store `s` must do; updates the model.
    fn model_instantiate(
        &mut self,
        s: usize,
        layout: usize,
        script: &VecDeque<bool>,
    ) -> (Outcome, Vec<Call>) {
        let spec = &LAYOUTS[layout];
        let mut calls = Vec::new();
        if unsupported(spec) {
            return (Outcome::Unsupported, calls);
        }
        let store = &self.model[s];
        let (ci, cm, ct) = store.caps;
        if store.instances + 1 > ci {
            return (Outcome::StoreLimit(Resource::Instance, ci), calls);
        }
        if store.memories.len() + spec.mems.len() > cm {
            return (Outcome::StoreLimit(Resource::Memory, cm), calls);
        }
        if store.tables.len() + spec.tables.len() > ct {
            return (Outcome::StoreLimit(Resource::Table, ct), calls);
        }
        let c = &mut self.counts;
        let exhausted = if c.instances + 1 > TOTAL {
            Some(Resource::Instance)
        } else if c.memories + spec.mems.len() as u32 > TOTAL {
            Some(Resource::Memory)
        } else if c.tables + spec.tables.len() as u32 > TOTAL {
            Some(Resource::Table)
        } else {
            None
        };
        if let Some(r) = exhausted {
            c.exhausted[resource_index(r)] += 1;
            return (Outcome::PoolExhausted(r, TOTAL), calls);
        }
        let mut answers = script.iter().copied();
        let mut memories = Vec::new();
        for m in spec.mems {
            let min = m.min as usize * PAGE;
            let maximum = m.max.unwrap_or(65_536).min(SLOT_PAGES) as usize * PAGE;
            calls.push(Call::MemoryGrowing(0, min, Some(maximum)));
            if !answers.next().unwrap_or(true) {
                c.denials += 1;
                return (Outcome::LimiterDenied(Resource::Memory, min), calls);
            }
            let mut bytes = vec![0; min];
            if let Some(i) = m.image {
                let img = &self.image_bytes[i];
                bytes[..img.len()].copy_from_slice(img);
            }
            memories.push(ModelMemory {
                initial: bytes.clone(),
                bytes,
                maximum,
            });
        }
        let mut tables = Vec::new();
        for t in spec.tables {
            let maximum = t.max.unwrap_or(u32::MAX).min(TABLE_ELEMENTS);
            calls.push(Call::TableGrowing(0, t.min, Some(maximum)));
            if !answers.next().unwrap_or(true) {
                c.denials += 1;
                return (
                    Outcome::LimiterDenied(Resource::Table, t.min as usize),
                    calls,
                );
            }
            tables.push(ModelTable {
                elements: vec![0; t.min as usize],
                maximum,
                minimum: t.min,
            });
        }
        c.instances += 1;
        c.memories += memories.len() as u32;
        c.tables += tables.len() as u32;
        let store = &mut self.model[s];
        store.instances += 1;
        store.memories.extend(memories);
        store.tables.extend(tables);
        (Outcome::Ok(0), calls)
    }
}
