//! What a request is about beyond a plain process tree (a runc container, a containerd
//! container, a VM guest, ...): a value of the plugin's own type that the core carries
//! without looking inside. Its kind picks the route; the plugin's adapters get it back
//! typed with [`DumpRequest::target`](super::DumpRequest::target).

use std::any::Any;
use std::fmt;

use crate::image::metadata::CheckpointKind;

/// A plugin's description of what to checkpoint or restore into.
pub trait Target: Any + fmt::Debug + Send + Sync + CloneTarget {
    /// The kind of checkpoint, which picks the route (the plugin owning that kind).
    fn kind(&self) -> CheckpointKind;

    /// Whether the checkpoint directory may be one the runtime wrote itself, without
    /// metadata.json (runc's `--image-path`): restored as is, its listed files checked.
    fn images_may_lack_metadata(&self) -> bool {
        false
    }
}

/// Cloning a boxed target (requests are `Clone`); implemented for every `Clone` target.
pub trait CloneTarget {
    /// A boxed copy.
    fn clone_target(&self) -> Box<dyn Target>;
}

impl<T: Target + Clone> CloneTarget for T {
    fn clone_target(&self) -> Box<dyn Target> {
        Box::new(self.clone())
    }
}

impl Clone for Box<dyn Target> {
    fn clone(&self) -> Self {
        (**self).clone_target()
    }
}

/// The target as `T`, when it is one.
pub(crate) fn downcast<T: Target>(target: Option<&dyn Target>) -> Option<&T> {
    let any: &dyn Any = target?;
    any.downcast_ref()
}

/// The target as a mutable `T`, when it is one.
pub(crate) fn downcast_mut<T: Target>(target: Option<&mut dyn Target>) -> Option<&mut T> {
    let any: &mut dyn Any = target?;
    any.downcast_mut()
}
