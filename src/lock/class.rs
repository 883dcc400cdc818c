//! Key classes: the one label metrics carry about keys.
//!
//! A raw key must never be a metric label (unbounded series). The
//! application may declare a small, fixed set of classes and a function
//! from key to class; anything the function returns outside the set is
//! recorded as [`OTHER`], so the label stays bounded whatever the function
//! does.

use std::sync::Arc;

use crate::error::{Error, Result};
use crate::metrics::DEFAULT_KEY_CLASS;

/// The class recorded for keys the classifier puts outside the declared set.
pub const OTHER: &str = "other";

/// Most classes one manager may declare.
pub const MAX_KEY_CLASSES: usize = 32;

type Classify = Arc<dyn Fn(&[u8]) -> &'static str + Send + Sync>;

/// The declared classes and the function that picks one per key.
#[derive(Clone)]
pub(crate) struct KeyClasses {
    /// Declared classes, plus [`OTHER`].
    classes: Box<[&'static str]>,
    classify: Option<Classify>,
}

impl KeyClasses {
    /// Every key in [`DEFAULT_KEY_CLASS`].
    pub(crate) fn none() -> KeyClasses {
        KeyClasses {
            classes: Box::new([DEFAULT_KEY_CLASS]),
            classify: None,
        }
    }

    /// `classes` (non-empty, distinct, each a non-empty label value) and
    /// the function choosing among them.
    pub(crate) fn declared(classes: &[&'static str], classify: Classify) -> Result<KeyClasses> {
        let invalid = |m: String| Err(Error::InvalidArgument(m));
        if classes.is_empty() || classes.len() > MAX_KEY_CLASSES {
            return invalid(format!(
                "key_classes needs 1 to {MAX_KEY_CLASSES} classes, got {}",
                classes.len()
            ));
        }
        for (i, class) in classes.iter().enumerate() {
            if class.is_empty() {
                return invalid("key_classes: a class name is empty".into());
            }
            if classes[..i].contains(class) {
                return invalid(format!("key_classes: {class:?} is declared twice"));
            }
        }
        let mut all = classes.to_vec();
        if !all.contains(&OTHER) {
            all.push(OTHER);
        }
        Ok(KeyClasses {
            classes: all.into_boxed_slice(),
            classify: Some(classify),
        })
    }

    /// The class of a key (as the application gave it, without namespace).
    pub(crate) fn of(&self, key: &[u8]) -> &'static str {
        let Some(classify) = &self.classify else {
            return DEFAULT_KEY_CLASS;
        };
        let class = classify(key);
        self.classes
            .iter()
            .find(|c| **c == class)
            .copied()
            .unwrap_or(OTHER)
    }

    /// Every class that can be recorded.
    pub(crate) fn all(&self) -> &[&'static str] {
        &self.classes
    }
}

impl std::fmt::Debug for KeyClasses {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.classes.iter()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prefix(key: &[u8]) -> &'static str {
        match key.split(|b| *b == b':').next() {
            Some(b"user") => "user",
            Some(b"order") => "order",
            _ => "unknown",
        }
    }

    /// Keys map to their declared class; anything outside the set is `other`.
    #[test]
    fn classes_stay_in_the_declared_set() {
        let c = KeyClasses::declared(&["user", "order"], Arc::new(prefix)).unwrap();
        assert_eq!(c.of(b"user:1"), "user");
        assert_eq!(c.of(b"order:9:x"), "order");
        assert_eq!(c.of(b"cart:1"), OTHER, "\"unknown\" was not declared");
        assert_eq!(c.of(b""), OTHER);
        assert_eq!(c.all(), ["user", "order", OTHER]);
        assert_eq!(KeyClasses::none().of(b"user:1"), DEFAULT_KEY_CLASS);
    }

    /// Empty, duplicate, or too many classes are refused.
    #[test]
    fn bad_declarations() {
        let f: Classify = Arc::new(prefix);
        for bad in [&[][..], &[""], &["a", "a"]] {
            assert!(matches!(
                KeyClasses::declared(bad, f.clone()),
                Err(Error::InvalidArgument(_))
            ));
        }
        let many: Vec<&'static str> = (0..=MAX_KEY_CLASSES)
            .map(|i| &*Box::leak(format!("c{i}").into_boxed_str()))
            .collect();
        assert!(KeyClasses::declared(&many, f.clone()).is_err());
        assert!(KeyClasses::declared(&many[..MAX_KEY_CLASSES], f).is_ok());
    }
}
