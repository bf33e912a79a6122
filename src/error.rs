//! The crate's error type and the resources it names.

use std::fmt;

/// What kind of thing an error is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Resource {
    /// An instance: one instantiation of an [`InstanceLayout`](crate::InstanceLayout).
    Instance,
    /// A linear memory.
    Memory,
    /// A table.
    Table,
}

impl Resource {
    /// The plural noun: "instances", "memories", "tables".
    pub fn plural(&self) -> &'static str {
        match self {
            Resource::Instance => "instances",
            Resource::Memory => "memories",
            Resource::Table => "tables",
        }
    }
}

impl fmt::Display for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Resource::Instance => "instance",
            Resource::Memory => "memory",
            Resource::Table => "table",
        })
    }
}

/// Everything that can go wrong when instantiating or growing.
///
/// Memory sizes in the fields are bytes; table sizes are elements.
/// A failed operation leaves the pool exactly as it was: no slot, counter or
/// byte is leaked.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Every slot of this kind in the pool is taken.
    #[error("maximum concurrent limit of {limit} for {} reached", resource.plural())]
    PoolExhausted {
        /// The slot kind that ran out.
        resource: Resource,
        /// The pool-wide number of slots of that kind.
        limit: u32,
    },
    /// Every stack of a [`StackPool`](crate::StackPool) is taken. (A
    /// variant of its own: [`Resource`] names what a store holds, and a new
    /// variant there would break every exhaustive match on it.)
    #[error("maximum concurrent limit of {limit} for stacks reached")]
    StacksExhausted {
        /// The pool's number of stacks.
        limit: u32,
    },
    /// The store's own cap on the number of instances, memories or tables
    /// (from [`ResourceLimiter::instances`](crate::ResourceLimiter::instances)
    /// and friends) would be exceeded.
    #[error("store limit of {limit} {} exceeded", resource.plural())]
    StoreLimit {
        /// What was counted.
        resource: Resource,
        /// The store's cap.
        limit: usize,
    },
    /// The layout cannot be served by this allocator (a minimum larger than
    /// a slot, more memories than an instance may have, an invalid type).
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// The resource limiter refused the growth.
    #[error("resource limiter denied growing a {resource} to {desired}")]
    LimiterDenied {
        /// What was growing.
        resource: Resource,
        /// The size the limiter was asked about (bytes or elements).
        desired: usize,
    },
    /// The limiter allowed the growth but it goes past the maximum the
    /// allocator supplied.
    #[error("cannot grow {resource} to {desired}: maximum is {maximum}")]
    MaximumExceeded {
        /// What was growing.
        resource: Resource,
        /// The size asked for (bytes or elements).
        desired: usize,
        /// The maximum passed to the limiter (bytes or elements).
        maximum: usize,
    },
    /// `Table::set` past the table's size.
    #[error("table index {index} out of bounds for size {size}")]
    OutOfBounds {
        /// The index asked for.
        index: u32,
        /// The table's size in elements.
        size: u32,
    },
    /// A [`PoolingConfig`](crate::PoolingConfig) that cannot work; the
    /// message names the field and its value.
    #[error("invalid pooling config: {0}")]
    InvalidConfig(String),
    /// The operating system refused a call (`mmap`, `mprotect`, `madvise`,
    /// `memfd_create`).
    #[error("operating system error: {0}")]
    Os(#[from] std::io::Error),
}
