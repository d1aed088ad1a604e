//! Entry index ↔ offsets: the partition's batches in order, with the
//! zero-width entries (see `marks.rs`) between them. Kept in memory,
//! rebuilt from the batch headers and the marks at open: 16 bytes per batch.

use super::marks::{Mark, MarkKind};

#[derive(Debug, Clone, Copy)]
struct EntryMeta {
    term: u64,
    /// One past the entry's last offset.
    end_offset: i64,
}

#[derive(Debug, Default)]
pub struct EntryIndex {
    /// Where entry 1 starts.
    start_offset: i64,
    entries: Vec<EntryMeta>,
    /// The zero-width entries, in index order.
    marks: Vec<Mark>,
}

impl EntryIndex {
    pub fn last_index(&self) -> u64 {
        self.entries.len() as u64
    }

    /// The term of entry `index`; 0 for index 0 (before the log).
    pub fn term(&self, index: u64) -> Option<u64> {
        match index {
            0 => Some(0),
            i => self.entries.get(i as usize - 1).map(|e| e.term),
        }
    }

    /// Where entry `index` starts (for `last_index() + 1`: the log end).
    pub fn base_offset(&self, index: u64) -> i64 {
        assert!(index >= 1 && index <= self.last_index() + 1, "entry {index} is outside the index");
        self.end_offset(index - 1)
    }

    /// One past entry `index`'s last offset; the start for index 0.
    pub fn end_offset(&self, index: u64) -> i64 {
        match index {
            0 => self.start_offset,
            i => self.entries[i as usize - 1].end_offset,
        }
    }

    /// A batch's entry.
    pub fn push(&mut self, term: u64, end_offset: i64) {
        assert!(end_offset > self.end_offset(self.last_index()), "a batch takes offsets");
        self.entries.push(EntryMeta { term, end_offset });
    }

    /// A zero-width entry at the next index.
    pub fn push_mark(&mut self, term: u64, kind: MarkKind) -> Mark {
        let end_offset = self.end_offset(self.last_index());
        self.entries.push(EntryMeta { term, end_offset });
        let mark = Mark { index: self.last_index(), term, kind };
        self.marks.push(mark.clone());
        mark
    }

    /// The zero-width entry at `index`, if it is one.
    pub fn mark(&self, index: u64) -> Option<MarkKind> {
        self.marks.binary_search_by_key(&index, |m| m.index).ok().map(|i| self.marks[i].kind.clone())
    }

    pub fn marks(&self) -> &[Mark] {
        &self.marks
    }

    /// Keeps entries up to `last_index`; true when marks were dropped.
    pub fn truncate(&mut self, last_index: u64) -> bool {
        self.entries.truncate(last_index as usize);
        let before = self.marks.len();
        self.marks.retain(|m| m.index <= last_index);
        self.marks.len() != before
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_and_terms() {
        let mut x = EntryIndex::default();
        x.push(1, 1);
        x.push(1, 11);
        x.push(2, 12);
        assert_eq!(x.last_index(), 3);
        assert_eq!((x.base_offset(2), x.end_offset(2)), (1, 11));
        assert_eq!(x.base_offset(4), 12);
        assert_eq!((x.term(0), x.term(3), x.term(4)), (Some(0), Some(2), None));
        let m = x.push_mark(3, MarkKind::LeaderChange);
        assert_eq!((m.index, x.base_offset(4), x.end_offset(4), x.mark(4), x.mark(3)), (4, 12, 12, Some(MarkKind::LeaderChange), None));
        assert!(x.truncate(1));
        assert_eq!(x.base_offset(2), 1);
    }
}
