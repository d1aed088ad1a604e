//! Entry index ↔ offsets: the partition's batches in order, with the
//! zero-width entries (see `marks.rs`) between them, from the entry after
//! the log's anchor (see `anchor.rs`; index 0 and offset 0 until the head is
//! first dropped). Kept in memory, rebuilt from the batch headers and the
//! marks at open: 16 bytes per batch.

use super::marks::{Mark, MarkKind};

#[derive(Debug, Clone, Copy)]
struct EntryMeta {
    term: u64,
    /// One past the entry's last offset.
    end_offset: i64,
}

#[derive(Debug, Default)]
pub struct EntryIndex {
    /// The last entry dropped from the head (0: none), its term, and the
    /// offset the next entry starts at.
    anchor_index: u64,
    anchor_term: u64,
    start_offset: i64,
    entries: Vec<EntryMeta>,
    /// The zero-width entries, in index order.
    marks: Vec<Mark>,
}

impl EntryIndex {
    /// An index whose first entry follows `anchor_index` and starts at `start_offset`.
    pub fn starting_after(anchor_index: u64, anchor_term: u64, start_offset: i64) -> EntryIndex {
        EntryIndex { anchor_index, anchor_term, start_offset, entries: Vec::new(), marks: Vec::new() }
    }

    pub fn first_index(&self) -> u64 {
        self.anchor_index + 1
    }

    pub fn last_index(&self) -> u64 {
        self.anchor_index + self.entries.len() as u64
    }

    /// The term of entry `index`: the anchor's for the anchor (0 before the
    /// log), None below it (dropped) or past the end.
    pub fn term(&self, index: u64) -> Option<u64> {
        if index == self.anchor_index {
            return Some(self.anchor_term);
        }
        let slot = index.checked_sub(self.first_index())?;
        self.entries.get(slot as usize).map(|e| e.term)
    }

    /// Where entry `index` starts (for `last_index() + 1`: the log end).
    pub fn base_offset(&self, index: u64) -> i64 {
        assert!(index >= self.first_index() && index <= self.last_index() + 1, "entry {index} is outside the index");
        self.end_offset(index - 1)
    }

    /// One past entry `index`'s last offset; the start for the anchor.
    pub fn end_offset(&self, index: u64) -> i64 {
        assert!(index >= self.anchor_index && index <= self.last_index(), "entry {index} is outside the index");
        match index - self.anchor_index {
            0 => self.start_offset,
            n => self.entries[n as usize - 1].end_offset,
        }
    }

    /// The last entry at or below `max_index` that ends at or below `offset`
    /// (the anchor when none does).
    pub fn last_ending_by(&self, offset: i64, max_index: u64) -> u64 {
        let upto = max_index.min(self.last_index()).saturating_sub(self.anchor_index) as usize;
        let n = self.entries[..upto].partition_point(|e| e.end_offset <= offset);
        self.anchor_index + n as u64
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
        assert!(last_index >= self.anchor_index, "truncating below the anchor");
        self.entries.truncate((last_index - self.anchor_index) as usize);
        let before = self.marks.len();
        self.marks.retain(|m| m.index <= last_index);
        self.marks.len() != before
    }

    /// Drops the entries up to `index`, which becomes the anchor.
    pub fn compact(&mut self, index: u64) {
        assert!(index >= self.anchor_index && index <= self.last_index(), "compacting to {index} outside the index");
        let (term, offset) = (self.term(index).expect("inside the index"), self.end_offset(index));
        self.entries.drain(..(index - self.anchor_index) as usize);
        self.marks.retain(|m| m.index > index);
        (self.anchor_index, self.anchor_term, self.start_offset) = (index, term, offset);
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

    #[test]
    fn compacting_keeps_indexes_offsets_and_terms_above_the_anchor() {
        let mut x = EntryIndex::default();
        x.push(1, 5);
        x.push_mark(2, MarkKind::LeaderChange);
        x.push(2, 9);
        x.push(2, 20);
        assert_eq!(x.last_ending_by(9, 4), 3);
        assert_eq!(x.last_ending_by(10, 4), 3);
        assert_eq!(x.last_ending_by(20, 3), 3, "capped at the index given");
        assert_eq!(x.last_ending_by(4, 4), 0);
        x.compact(3);
        assert_eq!((x.first_index(), x.last_index(), x.term(3), x.term(2), x.term(4)), (4, 4, Some(2), None, Some(2)));
        assert_eq!((x.base_offset(4), x.end_offset(3), x.end_offset(4)), (9, 9, 20));
        assert!(x.marks().is_empty());
        x.push(3, 25);
        assert!(!x.truncate(4));
        assert_eq!((x.last_index(), x.base_offset(5)), (4, 20));
        let y = EntryIndex::starting_after(7, 3, 100);
        assert_eq!((y.first_index(), y.last_index(), y.term(7), y.end_offset(7), y.base_offset(8)), (8, 7, Some(3), 100, 100));
    }
}
