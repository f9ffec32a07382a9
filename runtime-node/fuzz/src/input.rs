//! Cutting one fuzz input into parts: text sections and their fields, and the pieces a stream is
//! fed in.

/// Separates the sections of a text input (the ASCII record separator).
pub const SECTION: char = '\u{1e}';
/// Separates the fields of a section (the ASCII unit separator).
pub const FIELD: char = '\u{1f}';

/// Splits `data` into chunk sizes and a body: the first byte says how many size bytes follow
/// (0-7), each a piece length (0 read as 1).
pub fn chunk_plan(data: &[u8]) -> (Vec<usize>, &[u8]) {
    let Some((&count, rest)) = data.split_first() else {
        return (Vec::new(), data);
    };
    let count = usize::from(count % 8).min(rest.len());
    let (sizes, body) = rest.split_at(count);
    (sizes.iter().map(|&s| usize::from(s).max(1)).collect(), body)
}

/// Cuts `body` into consecutive pieces of `sizes`, cycled; single bytes when `sizes` is empty.
pub fn chunks<'a>(body: &'a [u8], sizes: &[usize]) -> Vec<&'a [u8]> {
    let mut pieces = Vec::new();
    let mut rest = body;
    for index in 0.. {
        if rest.is_empty() {
            break;
        }
        let size = if sizes.is_empty() { 1 } else { sizes[index % sizes.len()] };
        let (piece, tail) = rest.split_at(size.min(rest.len()));
        pieces.push(piece);
        rest = tail;
    }
    pieces
}
