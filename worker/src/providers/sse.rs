//! Server-sent events (`text/event-stream`), the framing OpenAI's and
//! Anthropic's streamed answers come in.

use eventsource_stream::{Event, EventStreamError, Eventsource};
use futures::stream::StreamExt;

use super::ProviderError;
use super::http::transport_error;
use super::streaming::{Framing, Messages};

impl Framing for Event {
    const DESCRIPTION: &'static str = "an event stream";

    fn accepts(content_type: &str) -> bool {
        content_type.trim_start().starts_with("text/event-stream")
    }

    fn messages(response: reqwest::Response) -> Messages<Self> {
        response
            .bytes_stream()
            .eventsource()
            .map(|event| event.map_err(sse_error))
            .boxed()
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
