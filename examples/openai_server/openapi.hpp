// GET /openapi.json: the routes qwen-serve answers, their request bodies and every response they
// can give, as an OpenAPI 3.0 document a client generator or a fuzzer can read (the server test
// runs schemathesis against it: no 5xx, and every response's status, content type and body as
// described here). The request schemas describe what a well-formed request looks like; the server
// may still refuse one with a 400 for what a schema does not say (a prompt plus max_tokens beyond
// the context, 'stream_options' without 'stream', a conversation the chat template refuses).
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

namespace qwen_serve {

namespace detail {

// Components and paths; the info block is added with the version at run time, and the error
// responses of each operation from error_statuses below.
inline constexpr const char* openapi_text = R"json({
  "openapi": "3.0.3",
  "paths": {
    "/v1/chat/completions": {
      "post": {
        "summary": "Chat completion (stream: true answers with server-sent events)",
        "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ChatCompletionRequest"}}}},
        "responses": {
          "200": {"description": "the completion, or its chunks as text/event-stream",
                  "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ChatCompletion"}},
                              "text/event-stream": {"schema": {"$ref": "#/components/schemas/ServerSentEvent"}}}}
        }
      }
    },
    "/v1/completions": {
      "post": {
        "summary": "Text completion (stream: true answers with server-sent events)",
        "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/CompletionRequest"}}}},
        "responses": {
          "200": {"description": "the completion, or its chunks as text/event-stream",
                  "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Completion"}},
                              "text/event-stream": {"schema": {"$ref": "#/components/schemas/ServerSentEvent"}}}}
        }
      }
    },
    "/tokenize": {
      "post": {
        "summary": "Token ids of a prompt, or of chat messages rendered by the chat template",
        "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/TokenizeRequest"}}}},
        "responses": {
          "200": {"description": "the token ids",
                  "content": {"application/json": {"schema": {"$ref": "#/components/schemas/TokenizeResponse"}}}}
        }
      }
    },
    "/detokenize": {
      "post": {
        "summary": "The text of token ids",
        "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/DetokenizeRequest"}}}},
        "responses": {
          "200": {"description": "the text",
                  "content": {"application/json": {"schema": {"type": "object", "required": ["prompt"], "properties": {"prompt": {"type": "string"}}}}}}
        }
      }
    },
    "/v1/models": {
      "get": {
        "summary": "The served model",
        "responses": {
          "200": {"description": "a list of one model",
                  "content": {"application/json": {"schema": {"type": "object", "required": ["object", "data"],
                    "properties": {"object": {"type": "string", "enum": ["list"]},
                                   "data": {"type": "array", "items": {"$ref": "#/components/schemas/Model"}}}}}}}
        }
      }
    },
    "/v1/models/{model}": {
      "get": {
        "summary": "The served model, by name",
        "parameters": [{"name": "model", "in": "path", "required": true, "schema": {"type": "string", "minLength": 1}}],
        "responses": {
          "200": {"description": "the model", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Model"}}}}
        }
      }
    },
    "/health": {
      "get": {
        "summary": "200 once the model is loaded, 503 before",
        "responses": {
          "200": {"description": "ready", "content": {"application/json": {"schema": {"type": "object", "required": ["status"],
                    "properties": {"status": {"type": "string", "enum": ["ok"]}}}}}}
        }
      }
    },
    "/metrics": {
      "get": {
        "summary": "Prometheus text exposition",
        "responses": {"200": {"description": "the metrics", "content": {"text/plain": {"schema": {"type": "string"}}}}}
      }
    },
    "/version": {
      "get": {
        "summary": "The server's version",
        "responses": {"200": {"description": "the version", "content": {"application/json": {"schema": {"type": "object",
                        "required": ["version"], "properties": {"version": {"type": "string"}}}}}}}
      }
    },
    "/openapi.json": {
      "get": {
        "summary": "This document",
        "responses": {"200": {"description": "OpenAPI 3.0", "content": {"application/json": {"schema": {"type": "object"}}}}}
      }
    }
  },
  "components": {
    "responses": {
      "Error": {"description": "OpenAI's error object", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
    },
    "schemas": {
      "Error": {
        "type": "object", "required": ["error"],
        "properties": {"error": {"type": "object", "required": ["message", "type", "param", "code"],
          "properties": {"message": {"type": "string"}, "type": {"type": "string"},
                         "param": {"type": "string", "nullable": true}, "code": {"type": "string", "nullable": true}}}}
      },
      "ServerSentEvent": {
        "description": "one event of a stream: data is a chunk object as JSON text, and the last event's data is [DONE]",
        "type": "object", "required": ["data"], "properties": {"data": {"type": "string"}, "event": {"type": "string"}}
      },
      "Stop": {"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}], "nullable": true},
      "TokenIds": {"type": "array", "items": {"type": "integer", "minimum": 0}},
      "SamplingFields": {
        "type": "object",
        "properties": {
          "model": {"type": "string", "nullable": true},
          "max_tokens": {"type": "integer", "minimum": 1, "nullable": true},
          "temperature": {"type": "number", "minimum": 0, "maximum": 2, "nullable": true},
          "top_p": {"type": "number", "exclusiveMinimum": true, "minimum": 0, "maximum": 1, "nullable": true},
          "top_k": {"type": "integer", "minimum": -1, "nullable": true},
          "min_p": {"type": "number", "minimum": 0, "maximum": 1, "nullable": true},
          "presence_penalty": {"type": "number", "minimum": -2, "maximum": 2, "nullable": true},
          "frequency_penalty": {"type": "number", "minimum": -2, "maximum": 2, "nullable": true},
          "repetition_penalty": {"type": "number", "minimum": 0.000001, "maximum": 2, "nullable": true},
          "seed": {"type": "integer", "nullable": true},
          "n": {"type": "integer", "minimum": 1, "maximum": 128, "nullable": true},
          "stop": {"$ref": "#/components/schemas/Stop"},
          "stop_token_ids": {"allOf": [{"$ref": "#/components/schemas/TokenIds"}], "nullable": true},
          "logit_bias": {"type": "object", "additionalProperties": {"type": "number", "minimum": -100, "maximum": 100}, "nullable": true},
          "stream": {"type": "boolean", "nullable": true},
          "stream_options": {"type": "object", "properties": {"include_usage": {"type": "boolean"}}, "nullable": true},
          "ignore_eos": {"type": "boolean", "nullable": true},
          "user": {"type": "string", "nullable": true}
        }
      },
      "Message": {
        "type": "object", "required": ["role", "content"],
        "properties": {
          "role": {"type": "string", "enum": ["system", "user", "assistant", "tool"]},
          "content": {"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "object", "required": ["type", "text"],
                       "properties": {"type": {"type": "string", "enum": ["text"]}, "text": {"type": "string"}}}}]},
          "reasoning_content": {"type": "string", "nullable": true},
          "tool_call_id": {"type": "string", "nullable": true}
        }
      },
      "Tool": {
        "type": "object", "required": ["type", "function"],
        "properties": {"type": {"type": "string", "enum": ["function"]},
                       "function": {"type": "object", "required": ["name"],
                                    "properties": {"name": {"type": "string"}, "description": {"type": "string"}, "parameters": {"type": "object"}}}}
      },
      "ChatCompletionRequest": {
        "allOf": [{"$ref": "#/components/schemas/SamplingFields"}, {
          "type": "object", "required": ["messages"],
          "properties": {
            "messages": {"type": "array", "minItems": 1, "items": {"$ref": "#/components/schemas/Message"}},
            "max_completion_tokens": {"type": "integer", "minimum": 1, "nullable": true},
            "logprobs": {"type": "boolean", "nullable": true},
            "top_logprobs": {"type": "integer", "minimum": 0, "maximum": 20, "nullable": true},
            "tools": {"type": "array", "items": {"$ref": "#/components/schemas/Tool"}, "nullable": true},
            "tool_choice": {"nullable": true, "oneOf": [{"type": "string", "enum": ["none", "auto", "required"]}, {"type": "object"}]},
            "response_format": {"nullable": true, "allOf": [{"$ref": "#/components/schemas/ResponseFormat"}]},
            "chat_template_kwargs": {"type": "object", "nullable": true, "properties": {"enable_thinking": {"type": "boolean"}}}
          }
        }]
      },
      "CompletionRequest": {
        "allOf": [{"$ref": "#/components/schemas/SamplingFields"}, {
          "type": "object", "required": ["prompt"],
          "properties": {
            "prompt": {"oneOf": [
              {"type": "string", "minLength": 1},
              {"type": "array", "minItems": 1, "items": {"type": "string", "minLength": 1}},
              {"type": "array", "minItems": 1, "items": {"type": "integer", "minimum": 0}},
              {"type": "array", "minItems": 1, "items": {"type": "array", "minItems": 1, "items": {"type": "integer", "minimum": 0}}}]},
            "echo": {"type": "boolean", "nullable": true},
            "logprobs": {"type": "integer", "minimum": 0, "maximum": 20, "nullable": true},
            "response_format": {"nullable": true, "allOf": [{"$ref": "#/components/schemas/ResponseFormat"}]}
          }
        }]
      },
      "ResponseFormat": {
        "type": "object",
        "properties": {
          "type": {"type": "string", "enum": ["text", "json_object", "json_schema"]},
          "json_schema": {"type": "object", "properties": {"name": {"type": "string"}, "schema": {"type": "object"}, "strict": {"type": "boolean", "nullable": true}}}
        }
      },
      "Usage": {
        "type": "object", "required": ["prompt_tokens", "completion_tokens", "total_tokens"],
        "properties": {"prompt_tokens": {"type": "integer"}, "completion_tokens": {"type": "integer"}, "total_tokens": {"type": "integer"},
                       "prompt_tokens_details": {"type": "object", "properties": {"cached_tokens": {"type": "integer"}}}}
      },
      "FinishReason": {"type": "string", "enum": ["stop", "length", "tool_calls", "abort"], "nullable": true},
      "ToolCall": {
        "type": "object", "required": ["id", "type", "function"],
        "properties": {"id": {"type": "string"}, "type": {"type": "string", "enum": ["function"]},
                       "function": {"type": "object", "required": ["name", "arguments"],
                                    "properties": {"name": {"type": "string"}, "arguments": {"type": "string"}}}}
      },
      "ChatCompletion": {
        "type": "object", "required": ["id", "object", "created", "model", "choices", "usage"],
        "properties": {
          "id": {"type": "string"}, "object": {"type": "string", "enum": ["chat.completion"]}, "created": {"type": "integer"},
          "model": {"type": "string"}, "usage": {"$ref": "#/components/schemas/Usage"},
          "choices": {"type": "array", "items": {"type": "object", "required": ["index", "message", "finish_reason"],
            "properties": {
              "index": {"type": "integer", "minimum": 0},
              "message": {"type": "object", "required": ["role"],
                          "properties": {"role": {"type": "string", "enum": ["assistant"]}, "content": {"type": "string", "nullable": true},
                                         "reasoning_content": {"type": "string", "nullable": true},
                                         "tool_calls": {"type": "array", "items": {"$ref": "#/components/schemas/ToolCall"}}}},
              "logprobs": {"type": "object", "nullable": true},
              "finish_reason": {"$ref": "#/components/schemas/FinishReason"}}}}
        }
      },
      "Completion": {
        "type": "object", "required": ["id", "object", "created", "model", "choices", "usage"],
        "properties": {
          "id": {"type": "string"}, "object": {"type": "string", "enum": ["text_completion"]}, "created": {"type": "integer"},
          "model": {"type": "string"}, "usage": {"$ref": "#/components/schemas/Usage"},
          "choices": {"type": "array", "items": {"type": "object", "required": ["index", "text", "finish_reason"],
            "properties": {"index": {"type": "integer", "minimum": 0}, "text": {"type": "string"},
                           "logprobs": {"type": "object", "nullable": true},
                           "finish_reason": {"$ref": "#/components/schemas/FinishReason"}}}}
        }
      },
      "TokenizeRequest": {
        "type": "object",
        "properties": {"model": {"type": "string", "nullable": true}, "prompt": {"type": "string"},
                       "messages": {"type": "array", "items": {"$ref": "#/components/schemas/Message"}},
                       "return_token_strs": {"type": "boolean", "nullable": true}}
      },
      "TokenizeResponse": {
        "type": "object", "required": ["count", "max_model_len", "tokens"],
        "properties": {"count": {"type": "integer", "minimum": 0}, "max_model_len": {"type": "integer"},
                       "tokens": {"$ref": "#/components/schemas/TokenIds"},
                       "token_strs": {"type": "array", "items": {"type": "string"}, "nullable": true}}
      },
      "DetokenizeRequest": {
        "type": "object", "required": ["tokens"],
        "properties": {"model": {"type": "string", "nullable": true}, "tokens": {"$ref": "#/components/schemas/TokenIds"}}
      },
      "Model": {
        "type": "object", "required": ["id", "object", "created", "owned_by"],
        "properties": {"id": {"type": "string"}, "object": {"type": "string", "enum": ["model"]}, "created": {"type": "integer"},
                       "owned_by": {"type": "string"}, "root": {"type": "string"}, "max_model_len": {"type": "integer"}}
      }
    }
  }
})json";

// The error statuses each operation can answer (the body: OpenAI's error object). 404: another
// model's name; 413: a body over the limit; 503: loading, overloaded or shutting down.
inline const std::pair<const char*, std::vector<const char*>> error_statuses[] = {
    {"/v1/chat/completions", {"400", "401", "404", "413", "503"}},
    {"/v1/completions", {"400", "401", "404", "413", "503"}},
    {"/tokenize", {"400", "401", "404", "413", "503"}},
    {"/detokenize", {"400", "401", "404", "413", "503"}},
    {"/v1/models", {"401"}},
    {"/v1/models/{model}", {"401", "404"}},
    {"/health", {"503"}},
};

}  // namespace detail

// What the document says about the served model once it is loaded: the one model name the
// generation routes take (another is a 404), the largest token id, the context length.
struct OpenApiModelFacts {
  std::string served_model_name;
  std::int64_t vocab_size = 0;
  std::int64_t max_model_len = 0;
};

// The document, with `version` in its info block and, when given, the served model's facts as
// bounds in the request schemas.
[[nodiscard]] inline nlohmann::ordered_json openapi_document(const std::string& version, const OpenApiModelFacts* facts = nullptr) {
  nlohmann::ordered_json doc = nlohmann::ordered_json::parse(detail::openapi_text);
  for (const auto& [path, statuses] : detail::error_statuses)
    for (auto& operation : doc["paths"][path])
      for (const char* status : statuses) operation["responses"][status] = {{"$ref", "#/components/responses/Error"}};
  if (facts) {
    auto& schemas = doc["components"]["schemas"];
    for (const char* schema : {"SamplingFields", "TokenizeRequest", "DetokenizeRequest"})
      schemas[schema]["properties"]["model"]["enum"] = {facts->served_model_name, nullptr};
    const std::int64_t last_id = facts->vocab_size - 1;
    schemas["TokenIds"]["items"]["maximum"] = last_id;
    for (auto& variant : schemas["CompletionRequest"]["allOf"][1]["properties"]["prompt"]["oneOf"]) {
      if (variant["type"] != "array") continue;
      auto& items = variant["items"];
      if (items["type"] == "integer") items["maximum"] = last_id;
      else if (items["type"] == "array") items["items"]["maximum"] = last_id;
    }
    schemas["SamplingFields"]["properties"]["max_tokens"]["maximum"] = facts->max_model_len;
    schemas["ChatCompletionRequest"]["allOf"][1]["properties"]["max_completion_tokens"]["maximum"] = facts->max_model_len;
  }
  nlohmann::ordered_json out = {{"openapi", doc["openapi"]},
                                {"info", {{"title", "qwen-serve"}, {"version", version},
                                          {"description", "An OpenAI-compatible server for Qwen3 checkpoints (docs/server.md)."}}}};
  out["paths"] = std::move(doc["paths"]);
  out["components"] = std::move(doc["components"]);
  return out;
}

}  // namespace qwen_serve
