#include "job.h"

#include <algorithm>

namespace vtprune::server {

size_t utf8_complete_prefix(std::string_view text) {
  // Look back at most 3 bytes for the lead byte of the last sequence.
  const size_t n = text.size();
  for (size_t back = 1; back <= 4 && back <= n; ++back) {
    const auto c = static_cast<unsigned char>(text[n - back]);
    if ((c & 0xC0) == 0x80) continue;  // continuation byte
    const size_t needed = c < 0x80 ? 1 : (c & 0xE0) == 0xC0 ? 2 : (c & 0xF0) == 0xE0 ? 3 : (c & 0xF8) == 0xF0 ? 4 : 1;
    return needed > back ? n - back : n;
  }
  return n;  // only continuation bytes: invalid anyway, pass them on
}

void Job::mark_started() {
  std::lock_guard lock(mutex_);
  started_at_ = Clock::now();
}

void Job::push_piece(std::string_view piece) {
  {
    std::lock_guard lock(mutex_);
    if (!first_piece_at_) first_piece_at_ = Clock::now();
    pending_.append(piece);
  }
  changed_.notify_all();
}

void Job::complete(pipeline::Result result, nlohmann::json logprobs) {
  {
    std::lock_guard lock(mutex_);
    result_ = std::move(result);
    logprobs_ = std::move(logprobs);
    done_ = true;
  }
  changed_.notify_all();
}

void Job::fail(ApiError error) {
  {
    std::lock_guard lock(mutex_);
    if (done_) return;
    error_ = std::move(error);
    done_ = true;
  }
  changed_.notify_all();
}

std::optional<Clock::time_point> Job::first_piece_at() const {
  std::lock_guard lock(mutex_);
  return first_piece_at_;
}

std::optional<Clock::time_point> Job::started_at() const {
  std::lock_guard lock(mutex_);
  return started_at_;
}

void Job::wait_done() {
  std::unique_lock lock(mutex_);
  changed_.wait(lock, [&] { return done_; });
}

void Job::wait_first_output() {
  std::unique_lock lock(mutex_);
  changed_.wait(lock, [&] { return done_ || first_piece_at_.has_value(); });
}

Job::Progress Job::take_progress(std::chrono::milliseconds wait) {
  std::unique_lock lock(mutex_);
  changed_.wait_for(lock, wait, [&] { return done_ || !pending_.empty(); });
  Progress progress;
  progress.done = done_;
  // Hold back a trailing partial UTF-8 character until its other bytes arrive.
  const size_t cut = done_ ? pending_.size() : utf8_complete_prefix(pending_);
  progress.text = pending_.substr(0, cut);
  pending_.erase(0, cut);
  return progress;
}

JobQueue::Push JobQueue::try_push(std::shared_ptr<Job> job) {
  {
    std::lock_guard lock(mutex_);
    if (closed_) return Push::closed;
    // a slot waiting for work takes the job at once: it does not wait in the queue
    const auto idle = static_cast<size_t>(std::count(idle_.begin(), idle_.end(), true));
    if (jobs_.size() >= capacity_ + idle) return Push::full;
    jobs_.push_back(std::move(job));
  }
  available_.notify_all();  // every idle slot looks: the job may prefer one of them
  return Push::accepted;
}

size_t JobQueue::shared_prefix(const Job& job, size_t slot) const {
  const auto& mine = job.request().message_digests;
  const auto& held = history_[slot];
  size_t n = 0;
  while (n < mine.size() && n < held.size() && mine[n] == held[n]) ++n;
  return n;
}

std::shared_ptr<Job> JobQueue::pop(size_t slot) {
  std::unique_lock lock(mutex_);
  idle_[slot] = true;
  for (;;) {
    if (closed_) {
      idle_[slot] = false;
      return nullptr;
    }
    for (auto it = jobs_.begin(); it != jobs_.end(); ++it) {
      const size_t mine = shared_prefix(**it, slot);
      bool better_idle = false;
      for (size_t other = 0; other < history_.size() && !better_idle; ++other) {
        better_idle = other != slot && idle_[other] && shared_prefix(**it, other) > mine;
      }
      if (better_idle) continue;
      auto job = std::move(*it);
      jobs_.erase(it);
      idle_[slot] = false;
      lock.unlock();
      available_.notify_all();  // jobs that preferred this slot may now go to another
      return job;
    }
    available_.wait(lock);
  }
}

void JobQueue::set_history(size_t slot, std::vector<std::string> digests) {
  std::lock_guard lock(mutex_);
  history_[slot] = std::move(digests);
  // The slot is done with its job (its answer is about to be sent) and calls pop() next: count it idle already, so
  // that the conversation's next turn, which the client may send before that, waits for it instead of going to
  // another slot that would have to prefill everything again.
  idle_[slot] = true;
}

std::vector<std::shared_ptr<Job>> JobQueue::close() {
  std::vector<std::shared_ptr<Job>> left;
  {
    std::lock_guard lock(mutex_);
    closed_ = true;
    left.assign(std::make_move_iterator(jobs_.begin()), std::make_move_iterator(jobs_.end()));
    jobs_.clear();
  }
  available_.notify_all();
  return left;
}

size_t JobQueue::depth() const {
  std::lock_guard lock(mutex_);
  return jobs_.size();
}

}  // namespace vtprune::server
