//! JSON lines (`application/x-ndjson`), the framing Ollama's streamed
//! answers come in: one JSON object per line.
//!
//! A line may arrive in any number of reads and one read may hold several
//! lines, so lines are cut from a buffer of the bytes received. Blank
//! lines are skipped, and a last line without its line end still counts.

use futures::stream::{self, Stream, StreamExt};

use super::ProviderError;
use super::http::transport_error;
use super::streaming::{Framing, Messages};

/// The longest line accepted: a tool call's arguments can be large, but
/// not without bound.
const MAX_LINE: usize = 16 * 1024 * 1024;

/// One line of the body, without its line end and never blank.
pub(super) struct Line(Vec<u8>);

impl Line {
    pub(super) fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl Framing for Line {
    const DESCRIPTION: &'static str = "JSON lines";

    /// `application/x-ndjson`, or a JSON type a proxy may put instead;
    /// anything else (an HTML page from a proxy, say) is not an answer.
    fn accepts(content_type: &str) -> bool {
        content_type.contains("json")
    }

    fn messages(response: reqwest::Response) -> Messages<Self> {
        lines(response.bytes_stream())
    }
}

/// The lines of `body`. A read error or an endless line is the last item.
fn lines<B: AsRef<[u8]>>(
    body: impl Stream<Item = reqwest::Result<B>> + Send + 'static,
) -> Messages<Line> {
    let reader = Reader {
        body: Box::pin(body),
        lines: Lines::default(),
        ended: false,
    };
    stream::unfold(Some(reader), |reader| async move {
        let mut reader = reader?;
        let item = reader.next().await?;
        let reader = item.is_ok().then_some(reader);
        Some((item, reader))
    })
    .boxed()
}

struct Reader<S> {
    body: std::pin::Pin<Box<S>>,
    lines: Lines,
    /// The body has no more bytes.
    ended: bool,
}

impl<S, B> Reader<S>
where
    S: Stream<Item = reqwest::Result<B>>,
    B: AsRef<[u8]>,
{
    async fn next(&mut self) -> Option<Result<Line, ProviderError>> {
        loop {
            if let Some(line) = self.lines.next() {
                return Some(Ok(Line(line.to_vec())));
            }
            if self.ended {
                return self.lines.rest().map(|rest| Ok(Line(rest.to_vec())));
            }
            match self.body.next().await {
                Some(Ok(bytes)) => {
                    if let Err(error) = self.lines.push(bytes.as_ref()) {
                        return Some(Err(error));
                    }
                }
                Some(Err(e)) => return Some(Err(transport_error(&e))),
                None => self.ended = true,
            }
        }
    }
}

/// The bytes received, cut into lines as they complete.
#[derive(Default)]
struct Lines {
    buffer: Vec<u8>,
    /// Where the next line starts.
    start: usize,
    /// Where the search for its end goes on: the bytes before hold none.
    scanned: usize,
}

impl Lines {
    fn push(&mut self, bytes: &[u8]) -> Result<(), ProviderError> {
        // Only the start of a line is left before more bytes are read.
        self.buffer.drain(..self.start);
        self.scanned -= self.start;
        self.start = 0;
        self.buffer.extend_from_slice(bytes);
        if self.buffer.len() > MAX_LINE && !self.buffer[self.scanned..].contains(&b'\n') {
            return Err(ProviderError::Protocol(format!(
                "a line of the answer is longer than {} MiB",
                MAX_LINE / (1024 * 1024)
            )));
        }
        Ok(())
    }

    /// The next complete line that is not blank, without its line end.
    fn next(&mut self) -> Option<&[u8]> {
        loop {
            let Some(offset) = self.buffer[self.scanned..].iter().position(|&b| b == b'\n') else {
                self.scanned = self.buffer.len();
                return None;
            };
            let (start, end) = (self.start, self.scanned + offset);
            self.start = end + 1;
            self.scanned = self.start;
            if !self.buffer[start..end].trim_ascii().is_empty() {
                return Some(self.buffer[start..end].trim_ascii());
            }
        }
    }

    /// What is left once the body has ended, if it is not blank.
    fn rest(&mut self) -> Option<&[u8]> {
        let start = std::mem::replace(&mut self.start, self.buffer.len());
        self.scanned = self.buffer.len();
        let rest = self.buffer[start..].trim_ascii();
        (!rest.is_empty()).then_some(rest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines_of(pieces: &[&[u8]]) -> Vec<String> {
        let mut lines = Lines::default();
        let mut out = Vec::new();
        for piece in pieces {
            lines.push(piece).expect("short lines");
            while let Some(line) = lines.next() {
                out.push(String::from_utf8_lossy(line).into_owned());
            }
        }
        if let Some(rest) = lines.rest() {
            out.push(String::from_utf8_lossy(rest).into_owned());
        }
        out
    }

    #[test]
    fn lines_are_cut_wherever_the_reads_end() {
        let text = "{\"a\":1}\n{\"b\":\"é\"}\r\n\n{\"c\":3}\n";
        let expected = ["{\"a\":1}", "{\"b\":\"é\"}", "{\"c\":3}"];
        assert_eq!(lines_of(&[text.as_bytes()]), expected);
        // Every cut, including inside the two bytes of "é".
        for cut in 1..text.len() {
            let (a, b) = text.as_bytes().split_at(cut);
            assert_eq!(lines_of(&[a, b]), expected, "cut at {cut}");
        }
        let bytes: Vec<&[u8]> = text.as_bytes().chunks(1).collect();
        assert_eq!(lines_of(&bytes), expected);
    }

    #[test]
    fn a_last_line_without_line_end_is_kept() {
        assert_eq!(
            lines_of(&[b"{\"a\":1}\n{\"b\"", b":2}"]),
            ["{\"a\":1}", "{\"b\":2}"]
        );
        assert_eq!(lines_of(&[b"{\"a\":1}\n  \n "]), ["{\"a\":1}"]);
    }

    #[test]
    fn an_endless_line_is_refused() {
        let mut lines = Lines::default();
        let piece = vec![b'x'; 1024 * 1024];
        for _ in 0..16 {
            assert!(lines.push(&piece).is_ok());
            assert!(lines.next().is_none());
        }
        assert!(matches!(lines.push(b"x"), Err(ProviderError::Protocol(_))));
    }

    #[tokio::test]
    async fn the_stream_ends_after_an_endless_line() {
        let piece = vec![b'x'; MAX_LINE + 1];
        let body = stream::iter([Ok::<_, reqwest::Error>(piece), Ok(b"\n{}\n".to_vec())]);
        let items: Vec<_> = lines(body).collect().await;
        assert!(
            matches!(items.as_slice(), [Err(ProviderError::Protocol(_))]),
            "{} items",
            items.len()
        );
    }
}
