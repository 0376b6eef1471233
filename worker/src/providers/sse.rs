//! The read loop of every streamed answer: server-sent events in,
//! [`ProviderEvent`]s out.
//!
//! A wire format ([`Format`]) turns each event into provider events and
//! says when the model has finished; this loop does what does not depend
//! on the format: it waits at most `idle` for each event, hands decoded
//! events out in order, and tells an answer that is complete from one cut
//! short. A finished answer whose connection then closes or falls silent
//! is complete (only its trailing events are lost); one that closes before
//! is a dropped answer, not a short one.

use std::collections::VecDeque;
use std::pin::Pin;
use std::time::Duration;

use eventsource_stream::{Event, EventStreamError};
use futures::stream::{self, Stream, StreamExt};

use super::http::transport_error;
use super::{ProviderError, ProviderEvent};

pub(super) type SseStream =
    Pin<Box<dyn Stream<Item = Result<Event, EventStreamError<reqwest::Error>>> + Send>>;

/// Whether reading goes on after an event.
pub(super) enum Flow {
    Continue,
    /// A terminal event: nothing after it is read.
    End,
}

/// One wire format's decoding of a streamed answer.
pub(super) trait Format: Send + 'static {
    /// Decode one event, pushing what it yields onto `out`.
    fn event(
        &mut self,
        event: &Event,
        out: &mut VecDeque<ProviderEvent>,
    ) -> Result<Flow, ProviderError>;

    /// Whether the model has finished its answer, so that the stream may
    /// end without its terminal event.
    fn finished(&self) -> bool;

    /// The answer is over: push what is still held (tool calls, usage).
    fn end(&mut self, out: &mut VecDeque<ProviderEvent>) -> Result<(), ProviderError>;
}

/// The events of one answer, from its server-sent events.
pub(super) fn decode<F: Format>(
    events: SseStream,
    idle: Duration,
    format: F,
) -> impl Stream<Item = Result<ProviderEvent, ProviderError>> + Send + 'static {
    let decoder = Decoder {
        events,
        idle,
        format,
        pending: VecDeque::new(),
        ended: false,
    };
    stream::unfold(decoder, |mut decoder| async move {
        let item = decoder.next().await?;
        Some((item, decoder))
    })
}

struct Decoder<F> {
    events: SseStream,
    idle: Duration,
    format: F,
    /// Decoded but not yet handed out.
    pending: VecDeque<ProviderEvent>,
    /// Nothing more to read (terminal event, end of stream or an error).
    ended: bool,
}

impl<F: Format> Decoder<F> {
    async fn next(&mut self) -> Option<Result<ProviderEvent, ProviderError>> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Some(Ok(event));
            }
            if self.ended {
                return None;
            }
            let step = match tokio::time::timeout(self.idle, self.events.next()).await {
                Err(_) if self.format.finished() => self.end(),
                Err(_) => Err(ProviderError::Timeout),
                Ok(Some(Ok(event))) => match self.format.event(&event, &mut self.pending) {
                    Ok(Flow::Continue) => Ok(()),
                    Ok(Flow::End) => self.end(),
                    Err(error) => Err(error),
                },
                Ok(Some(Err(e))) => Err(sse_error(e)),
                Ok(None) if self.format.finished() => self.end(),
                Ok(None) => Err(ProviderError::Transport(
                    "the stream ended before the answer was complete".into(),
                )),
            };
            if let Err(error) = step {
                self.ended = true;
                self.pending.clear();
                return Some(Err(error));
            }
        }
    }

    fn end(&mut self) -> Result<(), ProviderError> {
        self.ended = true;
        self.format.end(&mut self.pending)
    }
}

fn sse_error(error: EventStreamError<reqwest::Error>) -> ProviderError {
    match error {
        EventStreamError::Transport(e) => transport_error(&e),
        EventStreamError::Utf8(_) => {
            ProviderError::Protocol("the event stream is not valid UTF-8".into())
        }
        EventStreamError::Parser(_) => ProviderError::Protocol("malformed event stream".into()),
    }
}
