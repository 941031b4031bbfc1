#pragma once
#include <condition_variable>
#include <deque>
#include <functional>
#include <future>
#include <mutex>
#include <thread>
#include <type_traits>

/**
 * One thread of its own that runs submitted jobs in order. Every call into one model library
 * (mc_create, mc_forward, mc_set_comm, mc_destroy) goes through its model's SerialThread, for two
 * reasons:
 *  - OpenMP: libgomp keeps a thread team per calling thread. Forwards issued from whichever libuv
 *    worker was free made one team per worker, more threads than cores, and libgomp then turns
 *    every barrier's spin into a futex sleep: decode lost 26-80% (bench/RESULTS.md, CPU section).
 *  - CUDA and NCCL: the current device and the communicator's setup belong to a thread; one
 *    thread per rank keeps them where they were made.
 */
class SerialThread {
 public:
  SerialThread() : thread_([this] { loop(); }) {}
  ~SerialThread() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stopping_ = true;
    }
    cv_.notify_one();
    thread_.join();
  }
  SerialThread(const SerialThread&) = delete;
  SerialThread& operator=(const SerialThread&) = delete;

  /** Queues `job`; the future carries its result or its exception. */
  template <typename F>
  std::future<std::invoke_result_t<F>> submit(F job) {
    auto task = std::make_shared<std::packaged_task<std::invoke_result_t<F>()>>(std::move(job));
    std::future<std::invoke_result_t<F>> result = task->get_future();
    {
      std::lock_guard<std::mutex> lock(mutex_);
      jobs_.emplace_back([task] { (*task)(); });
    }
    cv_.notify_one();
    return result;
  }

  /**
   * Queues `job` with no future: it reports its own result (a forward's completion callback). It
   * must not throw; an exception out of it would end the process (std::terminate).
   */
  void post(std::function<void()> job) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      jobs_.emplace_back(std::move(job));
    }
    cv_.notify_one();
  }

  /** Runs `job` on the thread and waits for it; called from the thread itself, runs it in place. */
  template <typename F>
  std::invoke_result_t<F> run(F job) {
    if (std::this_thread::get_id() == thread_.get_id()) return job();
    return submit(std::move(job)).get();
  }

 private:
  void loop() {
    for (;;) {
      std::function<void()> job;
      {
        std::unique_lock<std::mutex> lock(mutex_);
        cv_.wait(lock, [&] { return stopping_ || !jobs_.empty(); });
        if (jobs_.empty()) return;  // stopping, and nothing left to run
        job = std::move(jobs_.front());
        jobs_.pop_front();
      }
      job();
    }
  }

  std::mutex mutex_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> jobs_;
  bool stopping_ = false;
  std::thread thread_;  // last: started once the members above exist
};
