//! Splits a byte stream (a file, or a blob read in ranges) into bounded chunks of complete
//! lines, each tagged with the byte offset just past it (its position). A line longer than
//! the record limit is not buffered whole: its first bytes are kept for the dead letter, the
//! rest is skipped as it streams by.

use crate::decode::Unit;

/// One line inside a [`Chunk`].
#[derive(Clone, Copy, Debug)]
pub struct LineSpan {
    start: usize,
    len: usize,
    /// Length of the whole line (without its `\n`), which exceeds `len` for a truncated line.
    pub full_len: usize,
    /// Offset just past the line (its `\n` included).
    pub position: i64,
}

/// Complete lines, with their positions.
#[derive(Debug, Default)]
pub struct Chunk {
    data: Vec<u8>,
    pub lines: Vec<LineSpan>,
    /// Offset of the first byte of the chunk.
    pub start: i64,
    /// Offset just past the last line.
    pub end: i64,
}

impl Chunk {
    pub fn units(&self) -> Vec<Unit<'_>> {
        self.lines
            .iter()
            .map(|l| Unit {
                bytes: &self.data[l.start..l.start + l.len],
                full_len: l.full_len,
                position: l.position,
                enqueued_at: None,
            })
            .collect()
    }

    pub fn bytes(&self) -> u64 {
        (self.end - self.start) as u64
    }

    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }
}

/// Push-based line splitter (see the module doc).
pub struct Chunker {
    max_line: usize,
    chunk_bytes: usize,
    data: Vec<u8>,
    lines: Vec<LineSpan>,
    /// Offset of `data[0]`.
    chunk_start: i64,
    /// Where the current (incomplete) line starts, in `data` and as an offset.
    cur_start: usize,
    cur_offset: i64,
    /// Bytes of the current line seen so far (kept or skipped).
    cur_full: usize,
}

impl Chunker {
    /// Starts at byte `offset` of the stream.
    pub fn new(offset: i64, max_line: usize, chunk_bytes: usize) -> Self {
        Chunker {
            max_line,
            chunk_bytes: chunk_bytes.max(1),
            data: Vec::new(),
            lines: Vec::new(),
            chunk_start: offset,
            cur_start: 0,
            cur_offset: offset,
            cur_full: 0,
        }
    }

    /// Feeds bytes; returns how many were consumed. Stops early once the chunk is full (take
    /// it, then feed the rest).
    pub fn feed(&mut self, mut input: &[u8]) -> usize {
        let mut consumed = 0;
        while !input.is_empty() && !self.is_full() {
            match memchr::memchr(b'\n', input) {
                Some(i) => {
                    self.keep(&input[..i]);
                    self.cur_full += i;
                    let position = self.cur_offset + self.cur_full as i64 + 1;
                    self.lines.push(LineSpan {
                        start: self.cur_start,
                        len: self.data.len() - self.cur_start,
                        full_len: self.cur_full,
                        position,
                    });
                    self.cur_offset = position;
                    self.cur_start = self.data.len();
                    self.cur_full = 0;
                    input = &input[i + 1..];
                    consumed += i + 1;
                }
                None => {
                    self.keep(input);
                    self.cur_full += input.len();
                    consumed += input.len();
                    input = &[];
                }
            }
        }
        consumed
    }

    /// Makes room for the chunk being gathered when `remaining` more bytes of input are
    /// to come: up to a full chunk (and a line past it) at once, instead of growing by
    /// doubling, which copies what is held at every step.
    pub fn reserve_for(&mut self, remaining: usize) {
        let want = remaining.min(self.chunk_bytes.saturating_add(1 << 20));
        let free = self.data.capacity() - self.data.len();
        if free < want {
            self.data.reserve(want);
        }
    }

    /// Keeps at most `max_line + 1` bytes of the current line (enough to know it is over).
    fn keep(&mut self, piece: &[u8]) {
        let have = self.data.len() - self.cur_start;
        let room = (self.max_line + 1).saturating_sub(have);
        self.data.extend_from_slice(&piece[..piece.len().min(room)]);
    }

    /// True when the complete lines reach the chunk size.
    pub fn is_full(&self) -> bool {
        !self.lines.is_empty() && self.cur_start >= self.chunk_bytes
    }

    /// Bytes of an incomplete last line held back.
    pub fn pending_tail(&self) -> usize {
        self.cur_full
    }

    /// At the end of the stream: a final stream's unterminated last line is a record
    /// (positioned at the end of the stream); a growing stream's is left for the next read.
    pub fn end_of_input(&mut self, final_tail: bool) {
        if final_tail && self.cur_full > 0 {
            let position = self.cur_offset + self.cur_full as i64;
            self.lines.push(LineSpan {
                start: self.cur_start,
                len: self.data.len() - self.cur_start,
                full_len: self.cur_full,
                position,
            });
            self.cur_offset = position;
            self.cur_start = self.data.len();
            self.cur_full = 0;
        }
    }

    /// Takes the complete lines gathered so far; an incomplete line carries over.
    pub fn take(&mut self) -> Chunk {
        let tail = self.data.split_off(self.cur_start);
        let data = std::mem::replace(&mut self.data, tail);
        let chunk = Chunk {
            data,
            lines: std::mem::take(&mut self.lines),
            start: self.chunk_start,
            end: self.cur_offset,
        };
        self.chunk_start = self.cur_offset;
        self.cur_start = 0;
        chunk
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines_of(c: &Chunk) -> Vec<(String, usize, i64)> {
        c.units()
            .iter()
            .map(|u| {
                (
                    String::from_utf8_lossy(u.bytes).into_owned(),
                    u.full_len,
                    u.position,
                )
            })
            .collect()
    }

    #[test]
    fn splits_with_offsets_across_feeds() {
        let mut ch = Chunker::new(100, 1000, 1 << 20);
        assert_eq!(ch.feed(b"ab\r\ncd"), 6);
        assert_eq!(ch.feed(b"e\n\nf"), 4);
        let c = ch.take();
        assert_eq!(
            lines_of(&c),
            vec![
                ("ab\r".into(), 3, 104),
                ("cde".into(), 3, 108),
                ("".into(), 0, 109)
            ]
        );
        assert_eq!((c.start, c.end), (100, 109));
        assert_eq!(ch.pending_tail(), 1);
        ch.end_of_input(false);
        assert!(ch.take().is_empty());
        ch.end_of_input(true);
        let c = ch.take();
        assert_eq!(lines_of(&c), vec![("f".into(), 1, 110)]);
    }

    #[test]
    fn oversized_lines_are_truncated_while_streaming() {
        let mut ch = Chunker::new(0, 10, 1 << 20);
        let long = vec![b'x'; 1000];
        for piece in long.chunks(7) {
            ch.feed(piece);
        }
        ch.feed(b"\nok\n");
        let c = ch.take();
        let l = lines_of(&c);
        assert_eq!(l[0].0.len(), 11);
        assert_eq!(l[0].1, 1000);
        assert_eq!(l[0].2, 1001);
        assert_eq!(l[1], ("ok".into(), 2, 1004));
    }

    #[test]
    fn chunks_are_bounded() {
        let mut ch = Chunker::new(0, 100, 8);
        let input = b"aaaa\nbbbb\ncccc\ndddd\n";
        let n = ch.feed(input);
        assert!(ch.is_full());
        assert_eq!(n, 10);
        let c1 = ch.take();
        assert_eq!(c1.lines.len(), 2);
        ch.feed(&input[n..]);
        let c2 = ch.take();
        assert_eq!((c2.start, c2.end), (10, 20));
    }
}
