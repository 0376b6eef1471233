//! The read loop of every streamed answer: the messages of a response body
//! in, events ([`ProviderEvent`](super::ProviderEvent)s for a model) out.
//!
//! A [`Framing`] cuts the body into messages (server-sent events, JSON
//! lines); a wire [`Format`] turns each message into provider events and
//! says when the model has finished. This loop does what depends on
//! neither: it waits for the first message until a start deadline and at
//! most `idle` for each one after, hands decoded events out in order, and
//! tells an answer that is complete from one cut short. A finished answer
//! whose connection then closes or falls silent is complete (only its
//! trailing messages are lost); one that closes before is a dropped
//! answer, retried like a dropped connection, not a short one.

use std::collections::VecDeque;
use std::time::Duration;

use futures::stream::{self, BoxStream, Stream, StreamExt};
use tokio::time::Instant;

use super::ProviderError;

/// The messages of one response body, read errors already classified.
pub(super) type Messages<M> = BoxStream<'static, Result<M, ProviderError>>;

/// How a response body is cut into the messages a [`Format`] decodes.
pub(super) trait Framing: Sized + Send + 'static {
    /// What such a body is, for the error when a response is not one.
    const DESCRIPTION: &'static str;

    /// Whether a response with this `Content-Type` is framed so.
    fn accepts(content_type: &str) -> bool;

    /// The messages of a successful response's body.
    fn messages(response: reqwest::Response) -> Messages<Self>;
}

/// Whether reading goes on after a message.
pub(super) enum Flow {
    Continue,
    /// A terminal message: nothing after it is read.
    End,
}

/// One wire format's decoding of a streamed answer.
pub(super) trait Format: Send + 'static {
    /// What the answer's body is made of.
    type Message: Framing;

    /// What the answer is decoded into: [`ProviderEvent`](super::ProviderEvent)s
    /// for a model.
    type Event: Send + 'static;

    /// Decode one message, pushing what it yields onto `out`.
    fn message(
        &mut self,
        message: &Self::Message,
        out: &mut VecDeque<Self::Event>,
    ) -> Result<Flow, ProviderError>;

    /// Whether the model has finished its answer, so that the stream may
    /// end without its terminal message.
    fn finished(&self) -> bool;

    /// The answer is over: push what is still held (tool calls, usage).
    fn end(&mut self, out: &mut VecDeque<Self::Event>) -> Result<(), ProviderError>;
}

/// When the messages of an answer must arrive.
#[derive(Debug, Clone, Copy)]
pub(super) struct Deadlines {
    /// For the first message.
    pub(super) first: Instant,
    /// For each message after, counted from the one before.
    pub(super) idle: Duration,
}

/// The events of one answer, from its messages.
pub(super) fn decode<F: Format>(
    messages: Messages<F::Message>,
    deadlines: Deadlines,
    format: F,
) -> impl Stream<Item = Result<F::Event, ProviderError>> + Send + 'static {
    let decoder = Decoder {
        messages,
        next_due: deadlines.first,
        idle: deadlines.idle,
        format,
        pending: VecDeque::new(),
        ended: false,
    };
    stream::unfold(decoder, |mut decoder| async move {
        let item = decoder.next().await?;
        Some((item, decoder))
    })
}

struct Decoder<F: Format> {
    messages: Messages<F::Message>,
    /// When the next message must have arrived.
    next_due: Instant,
    idle: Duration,
    format: F,
    /// Decoded but not yet handed out.
    pending: VecDeque<F::Event>,
    /// Nothing more to read (terminal message, end of body or an error).
    ended: bool,
}

impl<F: Format> Decoder<F> {
    async fn next(&mut self) -> Option<Result<F::Event, ProviderError>> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Some(Ok(event));
            }
            if self.ended {
                return None;
            }
            let step = match tokio::time::timeout_at(self.next_due, self.messages.next()).await {
                Err(_) if self.format.finished() => self.end(),
                Err(_) => Err(ProviderError::Timeout),
                Ok(Some(Ok(message))) => {
                    self.next_due = Instant::now() + self.idle;
                    match self.format.message(&message, &mut self.pending) {
                        Ok(Flow::Continue) => Ok(()),
                        Ok(Flow::End) => self.end(),
                        Err(error) => Err(error),
                    }
                }
                Ok(Some(Err(error))) => Err(error),
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
