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
  void complete(pipeline::Result result);
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
  std::optional<ApiError> error_;
  std::atomic<bool> cancelled_{false};
};

// Length of the longest prefix of `text` that does not end inside a UTF-8 sequence.
size_t utf8_complete_prefix(std::string_view text);

// A bounded FIFO of jobs waiting for a slot.
class JobQueue {
 public:
  explicit JobQueue(size_t capacity) : capacity_(capacity) {}
  enum class Push { accepted, full, closed };
  Push try_push(std::shared_ptr<Job> job);
  // Blocks for the next job; nullptr once the queue is closed.
  std::shared_ptr<Job> pop();
  // Refuses further pushes, wakes every pop() and returns the jobs still waiting.
  std::vector<std::shared_ptr<Job>> close();
  size_t depth() const;

 private:
  const size_t capacity_;
  mutable std::mutex mutex_;
  std::condition_variable available_;
  std::deque<std::shared_ptr<Job>> jobs_;
  bool closed_ = false;
};

}  // namespace vtprune::server
