//! What one instance needs: [`MemoryType`], [`TableType`], [`InstanceLayout`].

use crate::MemoryImage;
use std::sync::Arc;

/// The most pages a 32-bit linear memory can have (4 GiB).
pub const MAX_WASM_PAGES: u64 = 1 << 16;

/// A linear memory's limits, in WebAssembly pages of 64 KiB.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryType {
    /// Pages at instantiation.
    pub minimum: u64,
    /// The declared maximum, if any. `None` counts as 4 GiB (32-bit).
    pub maximum: Option<u64>,
}

impl MemoryType {
    /// A memory of `minimum_pages`, growing to at most `maximum_pages`.
    pub fn new(minimum_pages: u64, maximum_pages: Option<u64>) -> Self {
        MemoryType {
            minimum: minimum_pages,
            maximum: maximum_pages,
        }
    }

    /// Why this type is not a valid 32-bit memory, if it is not.
    pub(crate) fn check(&self) -> Result<(), String> {
        let max = self.maximum.unwrap_or(MAX_WASM_PAGES);
        if max > MAX_WASM_PAGES {
            return Err(format!(
                "memory maximum of {max} pages exceeds the 32-bit limit of {MAX_WASM_PAGES} pages"
            ));
        }
        if self.minimum > max {
            return Err(format!(
                "memory minimum of {} pages exceeds its maximum of {max} pages",
                self.minimum
            ));
        }
        Ok(())
    }

    /// The declared maximum in bytes (4 GiB when undeclared).
    pub(crate) fn declared_max_bytes(&self) -> usize {
        (self.maximum.unwrap_or(MAX_WASM_PAGES).min(MAX_WASM_PAGES) as usize)
            * crate::WASM_PAGE_SIZE
    }

    /// The minimum in bytes (valid types only).
    pub(crate) fn min_bytes(&self) -> usize {
        self.minimum as usize * crate::WASM_PAGE_SIZE
    }
}

/// A table's limits, in elements.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TableType {
    /// Elements at instantiation.
    pub minimum: u32,
    /// The declared maximum, if any.
    pub maximum: Option<u32>,
}

impl TableType {
    /// A table of `minimum` elements, growing to at most `maximum`.
    pub fn new(minimum: u32, maximum: Option<u32>) -> Self {
        TableType { minimum, maximum }
    }

    pub(crate) fn check(&self) -> Result<(), String> {
        match self.maximum {
            Some(max) if self.minimum > max => Err(format!(
                "table minimum of {} elements exceeds its maximum of {max}",
                self.minimum
            )),
            _ => Ok(()),
        }
    }
}

/// One memory of a layout, with its optional initial contents.
#[derive(Clone, Debug)]
pub(crate) struct MemoryPlan {
    pub ty: MemoryType,
    pub image: Option<Arc<MemoryImage>>,
}

/// What one instance needs: its memories (each with an optional image) and
/// its tables, in order. Cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct InstanceLayout {
    pub(crate) memories: Vec<MemoryPlan>,
    pub(crate) tables: Vec<TableType>,
}

impl InstanceLayout {
    /// An instance with no memories or tables.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a zero-filled memory.
    pub fn memory(mut self, ty: MemoryType) -> Self {
        self.memories.push(MemoryPlan { ty, image: None });
        self
    }

    /// Adds a memory whose first bytes are `image` (the rest zero). The
    /// image must fit in the memory's minimum.
    pub fn memory_with_image(mut self, ty: MemoryType, image: Arc<MemoryImage>) -> Self {
        self.memories.push(MemoryPlan {
            ty,
            image: Some(image),
        });
        self
    }

    /// Adds a table (elements start as 0).
    pub fn table(mut self, ty: TableType) -> Self {
        self.tables.push(ty);
        self
    }

    /// The checks every allocator makes: valid types, images that fit.
    pub(crate) fn check(&self) -> crate::Result<()> {
        for (i, m) in self.memories.iter().enumerate() {
            m.ty.check()
                .map_err(|e| crate::Error::Unsupported(format!("memory {i}: {e}")))?;
            if let Some(image) = &m.image
                && image.len() > m.ty.min_bytes()
            {
                return Err(crate::Error::Unsupported(format!(
                    "memory {i}: image of {} bytes exceeds the minimum of {} bytes",
                    image.len(),
                    m.ty.min_bytes()
                )));
            }
        }
        for (i, t) in self.tables.iter().enumerate() {
            t.check()
                .map_err(|e| crate::Error::Unsupported(format!("table {i}: {e}")))?;
        }
        Ok(())
    }
}
