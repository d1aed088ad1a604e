//! Entry index ↔ offsets: entry i (from 1) is the i-th batch of the
//! partition's log. Kept in memory, rebuilt from the batch headers at open:
//! 16 bytes per batch.

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

    pub fn push(&mut self, term: u64, end_offset: i64) {
        assert!(end_offset > self.end_offset(self.last_index()), "entries must take offsets");
        self.entries.push(EntryMeta { term, end_offset });
    }

    /// Keeps entries up to `last_index`.
    pub fn truncate(&mut self, last_index: u64) {
        self.entries.truncate(last_index as usize);
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
        x.truncate(1);
        assert_eq!(x.base_offset(2), 1);
    }
}
