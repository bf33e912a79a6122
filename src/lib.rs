#![doc = include_str!("../README.md")]
#![deny(missing_docs)]

mod allocator;
mod config;
mod error;
mod image;
mod layout;
mod limits;
mod memory;
mod slot;
mod store;
mod sys;
mod table;
#[cfg(feature = "wasmtime")]
pub mod wasmtime;

pub use allocator::{
    InstanceAllocator, OnDemandInstanceAllocator, PoolMetrics, PooledStack,
    PoolingInstanceAllocator, StackPool, StackPoolMetrics,
};
pub use config::{
    DENSE_MAX_STRIDE, MemoryLayout, MemoryProtection, PoolingConfig, StackPoolConfig,
};
pub use error::{Error, Resource};
pub use image::MemoryImage;
pub use layout::{InstanceLayout, MemoryType, TableType};
pub use limits::{
    LimiterFuture, ResourceLimiter, ResourceLimiterAsync, StoreLimits, StoreLimitsBuilder,
};
pub use memory::Memory;
pub use store::{Instance, Store};
pub use table::Table;

#[cfg(feature = "fault-injection")]
pub use sys::{Syscall, fault};

/// The WebAssembly page size: 64 KiB.
pub const WASM_PAGE_SIZE: usize = 65536;

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The host page size in bytes (what byte-size config values must be
/// multiples of).
pub fn host_page_size() -> usize {
    sys::page_size()
}

/// The number of kernel mappings (lines of `/proc/self/maps`) this process
/// has now: what `vm.max_map_count` limits.
pub fn kernel_mappings() -> std::io::Result<usize> {
    sys::mapping_count()
}
