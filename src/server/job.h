// One queued chat request shared by the HTTP thread that waits for it and the slot that runs it, and the
// bounded queue between them.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "vtprune/server.h"

namespace vtprune::server {

using Clock = std::chrono::steady_clock;

class Job {
 public:
  Job(ChatRequest request, Clock::time_point received) : request_(std::move(request)), received_(received) {}

  const ChatRequest& request() const { return request_; }
  Clock::time_point received() const { return received_; }

  // ---- slot side
  void mark_started();
  void push_piece(std::string_view piece);
  // `logprobs`: choices[].logprobs of the answer (null when not asked for).
  void complete(pipeline::Result result, nlohmann::json logprobs = nullptr);
  void fail(ApiError error);
  // When the first piece was generated (nullopt if none was).
  std::optional<Clock::time_point> first_piece_at() const;
  std::optional<Clock::time_point> started_at() const;

  // ---- HTTP side
  void wait_done();
  // Until the first piece exists or the job is done: a stream answers errors with a proper status before
  // its headers are sent.
  void wait_first_output();
  struct Progress {
    std::string text;  // new text, cut at a UTF-8 character boundary unless the job is done
    bool done = false;
  };
  Progress take_progress(std::chrono::milliseconds wait);
  // Valid after done: exactly one of them is set.
  const std::optional<pipeline::Result>& result() const { return result_; }
  const std::optional<ApiError>& error() const { return error_; }
  const nlohmann::json& logprobs() const { return logprobs_; }

  // The client went away (stream write failed); the slot stops at the next token.
  void cancel() { cancelled_ = true; }
  bool cancelled() const { return cancelled_; }

 private:
  ChatRequest request_;
  Clock::time_point received_;
  mutable std::mutex mutex_;
  std::condition_variable changed_;
  std::string pending_;  // generated text not yet taken by the stream writer
  bool done_ = false;
  std::optional<Clock::time_point> started_at_, first_piece_at_;
  std::optional<pipeline::Result> result_;
  nlohmann::json logprobs_;
  std::optional<ApiError> error_;
  std::atomic<bool> cancelled_{false};
};

// Length of the longest prefix of `text` that does not end inside a UTF-8 sequence.
size_t utf8_complete_prefix(std::string_view text);

// A bounded FIFO of jobs waiting for a slot, with conversation affinity: each slot's KV cache holds its last
// conversation, so a job goes to the idle slot whose last conversation shares the longest run of leading messages
// with it (ChatRequest::message_digests), as llama-server picks a slot by prompt similarity. Jobs are taken
// oldest first; a slot passes over a job only while a better slot for it is idle (and will take it at once).
class JobQueue {
 public:
  // Every slot counts as idle from the start: a slot whose worker has not reached pop() yet is not busy, and a job
  // it will take waits in the queue for that moment (otherwise a request right after start-up, with --queue 0,
  // would be refused as if every slot were busy).
  JobQueue(size_t capacity, size_t slots) : capacity_(capacity), history_(slots), idle_(slots, true) {}
  enum class Push { accepted, full, closed };
  // Full when `capacity` jobs wait already beyond the ones idle slots are about to take.
  Push try_push(std::shared_ptr<Job> job);
  // Blocks until there is a job for `slot` (see above); nullptr once the queue is closed.
  std::shared_ptr<Job> pop(size_t slot);
  // What `slot`'s KV cache now holds: the message digests of its last conversation, its answer included. Called when
  // the slot has finished a job and is about to call pop() again (it counts as idle from here).
  void set_history(size_t slot, std::vector<std::string> digests);
  // Refuses further pushes, wakes every pop() and returns the jobs still waiting.
  std::vector<std::shared_ptr<Job>> close();
  size_t depth() const;

 private:
  size_t shared_prefix(const Job& job, size_t slot) const;  // leading messages in common (under the mutex)
  const size_t capacity_;
  mutable std::mutex mutex_;
  std::condition_variable available_;
  std::deque<std::shared_ptr<Job>> jobs_;
  std::vector<std::vector<std::string>> history_;
  std::vector<bool> idle_;
  bool closed_ = false;
};

}  // namespace vtprune::server
