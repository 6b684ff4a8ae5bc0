//! What adapters of one plugin hand to each other during an operation, by type, without
//! the core knowing the types (the shape of `http::Extensions`): e.g. the containerd
//! plugin resolves its container to the runc container the runc handler then checkpoints.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::fmt;

/// A map from a type to one value of it.
#[derive(Default)]
pub struct Extensions {
    map: HashMap<TypeId, Box<dyn Any + Send + Sync>>,
}

impl Extensions {
    /// An empty map.
    pub fn new() -> Self {
        Self::default()
    }

    /// Stores `value`, returning the one of the same type it replaces.
    pub fn insert<T: Any + Send + Sync>(&mut self, value: T) -> Option<T> {
        self.map
            .insert(TypeId::of::<T>(), Box::new(value))
            .and_then(|old| old.downcast().ok().map(|b| *b))
    }

    /// The stored `T`, if any.
    pub fn get<T: Any + Send + Sync>(&self) -> Option<&T> {
        self.map.get(&TypeId::of::<T>())?.downcast_ref()
    }

    /// The stored `T`, mutable, if any.
    pub fn get_mut<T: Any + Send + Sync>(&mut self) -> Option<&mut T> {
        self.map.get_mut(&TypeId::of::<T>())?.downcast_mut()
    }

    /// Takes the stored `T` out, if any.
    pub fn remove<T: Any + Send + Sync>(&mut self) -> Option<T> {
        self.map
            .remove(&TypeId::of::<T>())
            .and_then(|old| old.downcast().ok().map(|b| *b))
    }
}

impl fmt::Debug for Extensions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The values' types are the plugins' own: only their number is shown.
        f.debug_struct("Extensions")
            .field("len", &self.map.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_value_per_type() {
        let mut e = Extensions::new();
        assert_eq!(e.insert(1u32), None);
        assert_eq!(e.insert(2u32), Some(1));
        e.insert(String::from("x"));
        assert_eq!(e.get::<u32>(), Some(&2));
        *e.get_mut::<String>().expect("string") += "y";
        assert_eq!(e.remove::<String>().as_deref(), Some("xy"));
        assert_eq!(e.get::<String>(), None);
        assert_eq!(format!("{e:?}"), "Extensions { len: 1 }");
    }
}
