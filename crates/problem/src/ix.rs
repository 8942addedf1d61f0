//! Typed indices into the indexed problem: a [`SiteIx`] points into
//! `Problem::sites`, a [`WorkloadIx`] into `Problem::workloads`, and an
//! [`IndexVec`] is a vector only its own kind of index opens — so a
//! workload's index used on the sites, or a bare number, does not compile.
//! (Rows, regions and failure domains stay plain `usize`: each has one
//! owner and few users.) Both are `u32` underneath: a placement's
//! `(SiteIx, u32)` pair is 8 bytes, not 16.

use std::fmt;
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut, Index, IndexMut};

/// An index type: made from and turned into a position.
pub trait Idx: Copy + Eq + Ord + fmt::Debug {
    fn new(position: usize) -> Self;
    fn ix(self) -> usize;
}

macro_rules! index_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
        pub struct $name(u32);

        impl Idx for $name {
            #[inline]
            fn new(position: usize) -> Self {
                debug_assert!(position <= u32::MAX as usize);
                $name(position as u32)
            }
            #[inline]
            fn ix(self) -> usize {
                self.0 as usize
            }
        }

        impl $name {
            /// The index at `position`, in a constant.
            pub const fn at(position: u32) -> Self {
                $name(position)
            }

            /// The index at `position`.
            #[inline]
            pub fn new(position: usize) -> Self {
                <Self as Idx>::new(position)
            }
            /// Its position, for arrays that are not an [`IndexVec`].
            #[inline]
            pub fn ix(self) -> usize {
                <Self as Idx>::ix(self)
            }
        }

        /// The bare number: model names (`x_w3_s7`) and messages read it.
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}#{}", stringify!($name), self.0)
            }
        }
    };
}

index_type!(
    /// A site's position in `Problem::sites`.
    SiteIx
);
index_type!(
    /// A workload's position in `Problem::workloads`.
    WorkloadIx
);

/// A vector opened only by its own index type `I`. It reads as a slice
/// (`len`, `iter`, …) through `Deref`; [`IndexVec::indices`] and
/// [`IndexVec::iter_enumerated`] give typed positions.
#[derive(Clone, PartialEq, Eq)]
pub struct IndexVec<I, T> {
    raw: Vec<T>,
    _index: PhantomData<fn(&I)>,
}

impl<I: Idx, T> IndexVec<I, T> {
    pub fn new() -> Self {
        Self::from_raw(Vec::new())
    }

    pub fn with_capacity(n: usize) -> Self {
        Self::from_raw(Vec::with_capacity(n))
    }

    pub fn from_raw(raw: Vec<T>) -> Self {
        IndexVec {
            raw,
            _index: PhantomData,
        }
    }

    /// `value` at each of `n` positions.
    pub fn from_elem_n(value: T, n: usize) -> Self
    where
        T: Clone,
    {
        Self::from_raw(vec![value; n])
    }

    pub fn raw(&self) -> &Vec<T> {
        &self.raw
    }

    pub fn into_raw(self) -> Vec<T> {
        self.raw
    }

    /// Append, returning the new element's index.
    pub fn push(&mut self, value: T) -> I {
        self.raw.push(value);
        I::new(self.raw.len() - 1)
    }

    pub fn get(&self, i: I) -> Option<&T> {
        self.raw.get(i.ix())
    }

    /// Every index, in order.
    pub fn indices(&self) -> impl DoubleEndedIterator<Item = I> + ExactSizeIterator + 'static
    where
        I: 'static,
    {
        (0..self.raw.len()).map(I::new)
    }

    /// (index, element), in order.
    pub fn iter_enumerated(&self) -> impl DoubleEndedIterator<Item = (I, &T)> + ExactSizeIterator {
        self.raw.iter().enumerate().map(|(i, t)| (I::new(i), t))
    }

    pub fn iter_enumerated_mut(&mut self) -> impl Iterator<Item = (I, &mut T)> {
        self.raw.iter_mut().enumerate().map(|(i, t)| (I::new(i), t))
    }
}

impl<I: Idx, T> Default for IndexVec<I, T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<I, T: fmt::Debug> fmt::Debug for IndexVec<I, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.raw.fmt(f)
    }
}

impl<I: Idx, T> Index<I> for IndexVec<I, T> {
    type Output = T;
    #[inline]
    fn index(&self, i: I) -> &T {
        &self.raw[i.ix()]
    }
}

impl<I: Idx, T> IndexMut<I> for IndexVec<I, T> {
    #[inline]
    fn index_mut(&mut self, i: I) -> &mut T {
        &mut self.raw[i.ix()]
    }
}

impl<I, T> Deref for IndexVec<I, T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        &self.raw
    }
}

impl<I, T> DerefMut for IndexVec<I, T> {
    fn deref_mut(&mut self) -> &mut [T] {
        &mut self.raw
    }
}

impl<I: Idx, T> FromIterator<T> for IndexVec<I, T> {
    fn from_iter<It: IntoIterator<Item = T>>(iter: It) -> Self {
        Self::from_raw(iter.into_iter().collect())
    }
}

impl<I: Idx, T> From<Vec<T>> for IndexVec<I, T> {
    fn from(raw: Vec<T>) -> Self {
        Self::from_raw(raw)
    }
}

impl<'a, I, T> IntoIterator for &'a IndexVec<I, T> {
    type Item = &'a T;
    type IntoIter = std::slice::Iter<'a, T>;
    fn into_iter(self) -> Self::IntoIter {
        self.raw.iter()
    }
}

impl<'a, I, T> IntoIterator for &'a mut IndexVec<I, T> {
    type Item = &'a mut T;
    type IntoIter = std::slice::IterMut<'a, T>;
    fn into_iter(self) -> Self::IntoIter {
        self.raw.iter_mut()
    }
}

impl<I, T> IntoIterator for IndexVec<I, T> {
    type Item = T;
    type IntoIter = std::vec::IntoIter<T>;
    fn into_iter(self) -> Self::IntoIter {
        self.raw.into_iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_positions_round_trip() {
        let mut v: IndexVec<SiteIx, &str> = IndexVec::new();
        let a = v.push("lyon");
        let b = v.push("oslo");
        assert_eq!((a.ix(), b.ix()), (0, 1));
        assert_eq!(v[b], "oslo");
        assert_eq!(v.indices().collect::<Vec<_>>(), vec![a, b]);
        assert_eq!(format!("{b} {b:?}"), "1 SiteIx#1");
        assert!(v.get(SiteIx::new(2)).is_none());
    }
}
