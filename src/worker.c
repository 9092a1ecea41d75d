/*-------------------------------------------------------------------------
 *
 * worker.c
 *		A jobq worker: claim due jobs, run them, record what happened.
 *
 * A worker is a dynamic background worker connected to jobq.database as
 * the bootstrap superuser; each job runs with its owner's identity (see
 * execute.c).  The loop:
 *
 *	1. reset the latch, then look for work, so that a wake-up that arrives
 *	   while we look is not lost;
 *	2. settle the journal if a worker died since we last looked (journal.c);
 *	3. run one execution transaction: claim up to claim_limit due jobs
 *	   with row locks (claim.c), run them one subtransaction each, until
 *	   JOBQ_CHUNK_MAX_SUBXIDS of them wrote or the chunk's time budget is
 *	   spent (JOBQ_CHUNK_BUDGET_MS, longer when commits are slow),
 *	   write their outcomes, commit: one commit per chunk covers the claim,
 *	   the jobs' effects and their outcomes.  Claimed jobs the chunk did
 *	   not get to are simply unlocked by the commit;
 *	4. with nothing due, sleep on the latch until the earliest future
 *	   run_at or jobq.poll_interval, whichever comes first.
 *
 * Chunks adapt: a worker claims one job at first and doubles its claim up
 * to jobq.batch_size while jobs finish quickly; a slow job resets it to
 * one, and after a job slower than JOBQ_SLOW_JOB_MS the worker commits at
 * once, leaving the unstarted rest of its claim to idle workers, which it
 * wakes, so slow jobs spread over the pool instead of queueing behind each
 * other in one worker.  DROP EXTENSION waits for an execution transaction:
 * it locks jobq's tables first.
 *
 * Each job being run is noted in the worker's slot (for jobq.jobs) and in
 * the journal (so that a job that kills its worker has its attempt
 * counted).
 *
 * Signals: SIGTERM (fast shutdown, pg_terminate_backend, DROP DATABASE
 * ... FORCE) cancels the job in hand; its subtransaction rolls back and
 * the job is pending again with its attempt not counted, but after a delay
 * that grows while its runs keep being interrupted, behind the jobs due
 * now (retry.c, JobqWriteInterruptions: otherwise a few jobs slower than a
 * worker's life would hold every worker of a terminate storm); the chunk
 * commits what finished, unlocks the jobs it did not start, and the
 * worker exits.  A job that swallows the cancel of a
 * shutdown, a jobq.cancel() or its timeout is ended by the watchdog after
 * jobq.cancel_grace (see JOBQ_WATCHDOG_MS).  Cancel interrupts are
 * held everywhere except inside a job, so a cancel request or a statement
 * timeout never interrupts our own bookkeeping.
 *
 * An error outside a job (a bug, or the extension dropped under us) is
 * caught by the sigsetjmp block below: the transaction is aborted, which
 * unlocks the chunk's jobs, and a settlement of our own journal entry
 * counts the attempt of the job in hand, if any.
 *
 * IDENTIFICATION
 *		src/worker.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <signal.h>

#include "access/xact.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/lwlock.h"
#include "storage/proc.h"
#include "tcop/tcopprot.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timeout.h"
#include "utils/timestamp.h"

#include "jobq.h"
#include "floors.h"
#include "journal.h"
#include "lease.h"
#include "prune.h"
#include "requests.h"
#include "slots.h"
#include "wakeup.h"

/* A job is "fast" when it takes less than this; fast jobs grow batches. */
#define JOBQ_FAST_JOB_US		2000

volatile sig_atomic_t jobq_in_job = false;
volatile sig_atomic_t jobq_shutdown_requested = false;
volatile int64 jobq_current_job_id = 0;

/* the chunk in hand: its claimed jobs, and the next one to start */
static JobqJob *chunk_jobs = NULL;
static int	chunk_njobs = 0;
static int	chunk_next = 0;

/*
 * Does this worker hold job id, claimed in its chunk?  Until the chunk
 * commits, every job of it is locked, whether it waits to run, was handed
 * back to another owner's transaction, or ran already (its outcome is
 * written at the commit): a job that waited for it would wait for ever.
 */
bool
JobqHeldByThisWorker(int64 id)
{
	int			i;

	for (i = 0; i < chunk_njobs; i++)
		if (chunk_jobs[i].id == id)
			return true;
	return false;
}

static int	my_slot = -1;
static int	claim_limit = 1;
static MemoryContext ChunkContext = NULL;
static MemoryContext JobContext = NULL;

/*
 * The watchdog: no job holds a worker much past its timeout, a
 * jobq.cancel() or a shutdown, even one that catches the cancel (a plpgsql
 * loop with EXCEPTION WHEN query_canceled) or ignores interrupts for a
 * while.  Every JOBQ_WATCHDOG_MS it looks at the job in hand; once the job
 * has gone on for jobq.cancel_grace after its deadline, after jobq.cancel()
 * began to ask for it (the oldest request published, requests.c, while
 * requests follow one another), or after a shutdown reached it, it notes
 * why in shared memory and escalates from cancel to die: the worker exits with FATAL, which no job can catch, its
 * transaction (the job's effects with it) is rolled back, and the
 * settlement of its journal entry records the attempt: a timed-out one as
 * failed with SQLSTATE 57014 (retried if attempts are left), a cancelled
 * one as cancelled.  The launcher replaces the worker at once.
 */
#define JOBQ_WATCHDOG_MS		250

static volatile TimestampTz shutdown_seen_at = 0;
static volatile TimestampTz cancel_since = 0;	/* the cancel asked since then */
static volatile TimestampTz cancel_last_seen = 0;
static volatile int64 watched_job = 0;	/* the job these times are about */

/*
 * A cancel is asked as long as requests for the job follow one another
 * with gaps shorter than this: a caller that gives up and calls again (a
 * jobq.cancel() under a statement_timeout shorter than the grace, in a
 * loop) still asks, and its job is ended after the grace all the same.
 */
#define JOBQ_CANCEL_GAP_US		((int64) 2000 * 1000)
static volatile JobqEscalation escalated = JOBQ_ESCALATE_NONE;
static volatile int64 escalated_job = 0;
static TimeoutId watchdog_timeout;
static bool watchdog_armed = false;

/*
 * The watchdog ticks only while the worker has jobs in hand: every tick
 * sets the latch, which would wake an idle worker for nothing.
 */
static void
arm_watchdog(void)
{
	if (watchdog_armed)
		return;
	enable_timeout_every(watchdog_timeout,
						 TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
													 JOBQ_WATCHDOG_MS),
						 JOBQ_WATCHDOG_MS);
	watchdog_armed = true;
}

static void
disarm_watchdog(void)
{
	if (!watchdog_armed)
		return;
	disable_timeout(watchdog_timeout, false);
	watchdog_armed = false;
}

/* runs in the SIGALRM handler: only plain reads, stores and atomics */
static void
jobq_watchdog(void)
{
	TimestampTz now;
	TimestampTz requested_at = 0;
	int64		grace_us = (int64) jobq_cancel_grace * 1000;
	JobqEscalation why = JOBQ_ESCALATE_NONE;
	int64		id = jobq_current_job_id;

	if (!jobq_in_job || escalated != JOBQ_ESCALATE_NONE || id == 0)
		return;
	now = GetCurrentTimestamp();
	if (id != watched_job)
	{
		watched_job = id;
		shutdown_seen_at = 0;
		cancel_since = 0;
		cancel_last_seen = 0;
	}
	/* a shutdown, once asked, stays asked */
	if (jobq_shutdown_requested && shutdown_seen_at == 0)
		shutdown_seen_at = now;

	/*
	 * A cancel is timed from the oldest request in place when the watchdog
	 * first saw one, and stays asked while requests follow one another
	 * (JOBQ_CANCEL_GAP_US): one look that finds none (the callers came and
	 * went between two ticks, or the look missed a request being published
	 * while it read the entries one by one) does not start the grace over,
	 * as it once did, when a job could outlive its grace many times.  It
	 * ends the job only while someone still asks.
	 */
	if (JobqCancelRequestedSince(id, &requested_at))
	{
		if (cancel_since == 0 || requested_at < cancel_since)
			cancel_since = requested_at;
		cancel_last_seen = now;
		if (now - cancel_since >= grace_us)
			why = JOBQ_ESCALATE_CANCEL;
	}
	else if (cancel_since != 0 && now - cancel_last_seen >= JOBQ_CANCEL_GAP_US)
		cancel_since = 0;		/* given up */

	if (why == JOBQ_ESCALATE_NONE && shutdown_seen_at != 0 &&
		now - shutdown_seen_at >= grace_us)
		why = JOBQ_ESCALATE_SHUTDOWN;
	if (why == JOBQ_ESCALATE_NONE && jobq_job_deadline != 0 &&
		now - jobq_job_deadline >= grace_us)
		why = JOBQ_ESCALATE_TIMEOUT;
	if (why == JOBQ_ESCALATE_NONE)
		return;

	escalated = why;
	escalated_job = id;
	JobqEscalationNote(my_slot, id, why);
	ProcDiePending = true;
	InterruptPending = true;
	SetLatch(MyLatch);
}

/* on the way out: say in the log why a job ended with its worker */
static void
report_escalation(void)
{
	if (escalated == JOBQ_ESCALATE_NONE)
		return;
	ereport(LOG,
			(errmsg("jobq worker %d ended job " INT64_FORMAT " by exiting",
					my_slot + 1, (int64) escalated_job),
			 errdetail("%s",
					   escalated == JOBQ_ESCALATE_TIMEOUT ?
					   "The job ran past its timeout and did not stop within \"jobq.cancel_grace\"." :
					   escalated == JOBQ_ESCALATE_CANCEL ?
					   "The job was cancelled by jobq.cancel() and did not stop within \"jobq.cancel_grace\"." :
					   "The server asked the worker to stop, and the job did not stop within \"jobq.cancel_grace\".")));
}

/*
 * SIGTERM: stop after the job in hand, and cancel that job.
 */
static void
jobq_worker_sigterm(SIGNAL_ARGS)
{
	int			save_errno = errno;

	jobq_shutdown_requested = true;
	if (jobq_in_job)
	{
		QueryCancelPending = true;
		InterruptPending = true;
	}
	SetLatch(MyLatch);

	errno = save_errno;
}

/*
 * SIGUSR2: jobq.cancel() asks for a job that a worker holds.  Cancel the
 * job in hand if it is that job; a request for another job (one claimed
 * but not started, or one that already finished) is not this job's: the
 * worker finds it before it starts that job (execute.c).  The job's id is
 * set before jobq_in_job, and execute.c checks the requests once more
 * after setting jobq_in_job, so a request is never missed.
 */
static void
jobq_worker_sigusr2(SIGNAL_ARGS)
{
	int			save_errno = errno;

	if (jobq_in_job && JobqCancelRequested(jobq_current_job_id))
	{
		QueryCancelPending = true;
		InterruptPending = true;
	}
	SetLatch(MyLatch);

	errno = save_errno;
}

/*
 * Give the slot back on exit.  Registered before the database connection
 * exists, so it runs after the transaction has been aborted: once a slot
 * is free, the process that held it holds no row locks and can no longer
 * commit anything, and its journal entry may be settled.
 */
static void
worker_detach(int code, Datum arg)
{
	int			slot = DatumGetInt32(arg);

	report_escalation();

	/* unsettled before the slot is free: see journal.c */
	JobqJournalUnsettled(slot);
	JobqSlotDetach(slot);
}

static void
set_busy(bool busy)
{
	JobqSlotSetBusy(my_slot, busy);
}

static bool
stop_requested(void)
{
	return jobq_shutdown_requested || JobqSlotStopRequested(my_slot);
}

/*
 * Note the job this worker starts, in the slot and in the journal.  False
 * if its queue already runs as many jobs as its concurrency allows, or its
 * role as many as its max_running: then the job is not started.
 */
static bool
begin_job(JobqJob *job)
{
	TimestampTz now = GetCurrentTimestamp();

	if (!JobqSlotBeginJob(my_slot, job->id, job->owner, job->attempts, now,
						  job->queue, JobqQueueLimit(job->queue),
						  JobqRoleRunningLimit(job->owner)))
		return false;
	JobqJournalBegin(my_slot, job, now);
	jobq_current_job_id = job->id;
	return true;
}

static void
end_job(void)
{
	/* a watchdog tick too late for the job must not label a later death */
	(void) JobqEscalationTake(my_slot, jobq_current_job_id);
	jobq_current_job_id = 0;
	JobqSlotEndJob(my_slot);
	JobqJournalEnd(my_slot);
}

/*
 * Count the committed outcomes of a chunk, for jobq.workers.
 */
static void
count_outcomes(JobqOutcome *outcomes, int n)
{
	uint64		succeeded = 0;
	uint64		retried = 0;
	uint64		failed = 0;
	int			i;

	for (i = 0; i < n; i++)
	{
		if (outcomes[i].kind == JOBQ_SUCCEEDED)
			succeeded++;
		else if (outcomes[i].kind == JOBQ_RETRY)
			retried++;
		else if (outcomes[i].kind == JOBQ_FAILED)
			failed++;
	}
	JobqSlotCountOutcomes(my_slot, succeeded, retried, failed);
}

/*
 * Exit so that the launcher starts a fresh process in this slot at once:
 * the next job in priority order belongs to another owner, and this
 * session may hold state of the jobs it ran (session.c).  Called between
 * execution transactions, with no job in hand; an idle worker, if there is
 * one, takes the job meanwhile.
 */
static void
recycle_worker(void)
{
	/* busy: the wake-up below is for another worker */
	JobqSlotRecycle(my_slot);
	JobqWakeWorkers(1);
	ereport(DEBUG1,
			(errmsg("jobq worker %d exits to give another owner's job a fresh session",
					my_slot + 1)));
	proc_exit(0);
}

/*
 * How long recent commits of this worker's chunks took (microseconds, a
 * moving average), and the time budget of a chunk that follows from it.
 */
static int64 commit_us = 0;

static void
note_commit_time(TimestampTz start)
{
	int64		us = GetCurrentTimestamp() - start;

	commit_us = (commit_us * 7 + us) / 8;
}

static int
chunk_budget_ms(void)
{
	int64		ms = commit_us * JOBQ_CHUNK_COMMIT_FACTOR / 1000;

	return (int) Max(JOBQ_CHUNK_BUDGET_MS, Min(ms, JOBQ_CHUNK_BUDGET_MAX_MS));
}

/*
 * One execution transaction: claim up to *claim_limit due jobs, run them,
 * record their outcomes, commit.  Adapts *claim_limit: doubled (up to
 * jobq.batch_size) when every claimed job ran and they took under
 * JOBQ_FAST_JOB_US on average, cut to what ran when the time budget ended
 * the chunk, back to one after a slow job.
 *
 * Returns the number of jobs claimed, or -1 if the extension is not
 * installed.  With nothing due, *next_due is the earliest run_at of a
 * pending job (DT_NOEND if none).
 */
/* one execution transaction's jobs, as the chunk goes */
typedef struct Chunk
{
	JobqJob    *jobs;
	JobqOutcome *outcomes;
	int			njobs;			/* claimed */
	int			next;			/* the next to run; those before it ran */
	TimestampTz start;
	bool		slow;			/* a job took JOBQ_SLOW_JOB_MS or more */
	bool		queue_full;		/* a queue reached its concurrency */
	bool		recycle;		/* a fresh process must run the rest */
	Oid			owner;			/* owner of the jobs run */
	int			n_handed_back;	/* jobs of other owners let go */
	int16		handed_back_priority;	/* of the first of them */
} Chunk;

/* what the chunk does with its next job */
typedef enum ChunkStep
{
	STEP_RUN,
	STEP_SKIP,					/* let go unrun, the chunk goes on */
	STEP_STOP					/* the chunk ends before it */
} ChunkStep;

/*
 * Decide about the next job of the chunk, before it runs.
 *
 * One owner per execution transaction: the jobs of other owners in the
 * claim go back to the queue at the commit, unrun.  What PostgreSQL keeps
 * per transaction would otherwise reach them (open large objects,
 * PL/pgSQL's simple expressions with their privilege checks done, SET
 * CONSTRAINTS, transaction advisory locks), and the jobs run so far would
 * keep their row locks, and their effects uncommitted, while they run.
 * The owner's later jobs of the same priority still run in this
 * transaction; one of a lower priority than a job handed back would jump
 * ahead of it, so the chunk ends there.
 */
static ChunkStep
chunk_next_step(Chunk *c)
{
	JobqJob    *job = &c->jobs[c->next];

	/* cancelled by an earlier job of this chunk: its row is gone */
	if (JobqClaimedJobGone(job))
		return STEP_SKIP;
	if (OidIsValid(c->owner) && job->owner != c->owner)
	{
		if (c->n_handed_back == 0)
			c->handed_back_priority = job->priority;
		c->n_handed_back++;
		return STEP_SKIP;
	}
	if (c->n_handed_back > 0 && job->priority < c->handed_back_priority)
		return STEP_STOP;

	/*
	 * Another owner's job, and our session may hold state of the jobs run
	 * so far (session.c): hand it and the rest back, and make room for a
	 * fresh process.
	 */
	if (!JobqSessionMayRun(job->owner))
	{
		c->recycle = true;
		return STEP_STOP;
	}
	/* its queue is at its concurrency: leave the rest to later claims */
	if (!begin_job(job))
	{
		c->queue_full = true;
		return STEP_STOP;
	}
	return STEP_RUN;
}

/* must the chunk commit after the job it just ran? */
static bool
chunk_ends_after(Chunk *c)
{
	JobqOutcome *done = &c->outcomes[c->next - 1];

	/* a slow job: leave the rest to idle workers, woken after the commit */
	if (TimestampDifferenceExceeds(done->started_at, done->finished_at,
								   JOBQ_SLOW_JOB_MS))
	{
		c->slow = true;
		return true;
	}
	/* a cancelled job at once: jobq.cancel() waits for it */
	if (done->kind == JOBQ_CANCELLED)
		return true;
	/* and the lock of its role's enqueue limit, which others wait for */
	if (JobqRoleLockHeld())
		return true;
	if (MyProc->subxidStatus.overflowed ||
		MyProc->subxidStatus.count >= JOBQ_CHUNK_MAX_SUBXIDS)
		return true;
	return TimestampDifferenceExceeds(c->start, GetCurrentTimestamp(),
									  chunk_budget_ms());
}

/* run the chunk's jobs, one subtransaction each, until it must commit */
static void
chunk_run_jobs(Chunk *c)
{
	set_busy(true);
	arm_watchdog();
	c->outcomes = palloc0(sizeof(JobqOutcome) * c->njobs);
	c->start = GetCurrentTimestamp();
	chunk_jobs = c->jobs;
	chunk_njobs = c->njobs;
	while (c->next < c->njobs)
	{
		ChunkStep	step;

		CHECK_FOR_INTERRUPTS();
		if (stop_requested())
			break;
		chunk_next = c->next;
		step = chunk_next_step(c);
		if (step == STEP_STOP)
			break;
		if (step == STEP_SKIP)
		{
			c->outcomes[c->next++].kind = JOBQ_RELEASE;
			continue;
		}
		c->owner = c->jobs[c->next].owner;
		JobqExecuteJob(&c->jobs[c->next], &c->outcomes[c->next], JobContext, false);
		end_job();
		MemoryContextReset(JobContext);
		c->next++;
		if (chunk_ends_after(c))
			break;
	}
	chunk_njobs = 0;
}

/*
 * The next claim's size: doubled (up to jobq.batch_size) when every job
 * claimed ran and they took under JOBQ_FAST_JOB_US on average, what ran
 * when the chunk ended early, one after a slow job.
 */
static int
chunk_next_limit(const Chunk *c, int limit)
{
	if (c->slow || c->queue_full || c->recycle)
		return 1;
	if (c->next < c->njobs)
		return Max(c->next, 1);
	if (!TimestampDifferenceExceeds(c->start, GetCurrentTimestamp(),
									(int) ((int64) c->njobs * JOBQ_FAST_JOB_US / 1000)))
		return Min(limit * 2, jobq_batch_size);
	return 1;
}

/*
 * After the commit: claimed jobs that are still pending (retried,
 * interrupted, or not run) are claimable again at or after their
 * claim-time key (see claim.c), the outcomes are counted, and idle
 * workers take what the chunk left, at once.
 */
static void
chunk_after_commit(const Chunk *c)
{
	int			left_over = c->njobs - c->next;
	int			i;

	for (i = 0; i < c->njobs; i++)
		if (i >= c->next || c->outcomes[i].kind == JOBQ_RETRY ||
			c->outcomes[i].kind == JOBQ_RELEASE ||
			c->outcomes[i].kind == JOBQ_INTERRUPTED)
			JobqFloorLower(JOBQ_FLOORS_WORKERS, c->jobs[i].priority, c->jobs[i].run_at,
						   c->jobs[i].id);
	count_outcomes(c->outcomes, c->next);
	MemoryContextReset(ChunkContext);
	set_busy(false);
	if ((c->slow && left_over > 0) || c->n_handed_back > 0)
		JobqWakeWorkers((c->slow ? left_over : 0) + c->n_handed_back);
	if (c->recycle)
		recycle_worker();
}

static int
run_chunk(int *claim_limit, TimestampTz *next_due)
{
	MemoryContext oldcxt = CurrentMemoryContext;
	Chunk		c;
	TimestampTz commit_start;

	*next_due = DT_NOEND;
	memset(&c, 0, sizeof(c));

	/*
	 * Outcomes and cached role settings live in ChunkContext, reset after
	 * the commit; each job's own work lives in JobContext, reset after the
	 * job.
	 */
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	MemoryContextSwitchTo(ChunkContext);
	JobqForgetRoleSettings();

	if (!JobqLockTables())
		c.njobs = -1;
	else
		c.njobs = JobqClaimInTransaction(my_slot, *claim_limit, ChunkContext,
										 &c.jobs, next_due);
	if (c.njobs <= 0)
	{
		CommitTransactionCommand();
		MemoryContextSwitchTo(oldcxt);
		MemoryContextReset(ChunkContext);
		return c.njobs;
	}

	chunk_run_jobs(&c);

	pgstat_report_activity(STATE_RUNNING, "jobq: recording job outcomes");
	PushActiveSnapshot(GetTransactionSnapshot());
	JobqFinishJobs(c.jobs, c.outcomes, c.next);
	PopActiveSnapshot();
	*claim_limit = chunk_next_limit(&c, *claim_limit);

	commit_start = GetCurrentTimestamp();
	CommitTransactionCommand();
	note_commit_time(commit_start);
	MemoryContextSwitchTo(oldcxt);

	chunk_after_commit(&c);
	return c.njobs;
}

/*
 * Take the slot, connect, and say so: before anything else, the slot,
 * since while it is ours nobody else settles its journal entry.  A worker
 * started for a launcher that is gone exits.
 */
static void
worker_attach(uint32 generation)
{
	bool		recycled;
	char		appname[NAMEDATALEN];

	if (!JobqSlotAttach(my_slot, generation, &recycled))
		proc_exit(0);
	JobqJournalUnsettled(my_slot);

	/*
	 * The counts go on across the recycling of a session (session.c).  A
	 * process started for another owner's job claims a whole batch at
	 * once: it runs that owner's jobs of the batch and hands the others
	 * back, so that jobs of owners in turn cost a process start per batch,
	 * not per job.
	 */
	if (recycled)
		claim_limit = jobq_batch_size;
	before_shmem_exit(worker_detach, Int32GetDatum(my_slot));

	BackgroundWorkerInitializeConnection(jobq_database, NULL, 0);

	/* from here on, an exit is not a failure to start (launcher.c) */
	JobqSlotReady(my_slot);

	snprintf(appname, sizeof(appname), "jobq worker %d", my_slot + 1);
	SetConfigOption("application_name", appname, PGC_USERSET, PGC_S_SESSION);
}

/*
 * The worker's own baseline, whatever ALTER DATABASE or ALTER ROLE set for
 * the database or the bootstrap superuser: jobq's statements resolve
 * operators and functions in pg_catalog only, run read-write in read
 * committed, and are not cut short by timeouts; triggers and foreign keys
 * fire (session_replication_role).  Jobs get a login-like baseline of
 * their own on top (execute.c).  Also the memory contexts, the session's
 * watch over what jobs leave, and the watchdog's timer.
 */
static void
worker_baseline(void)
{
	SetConfigOption("search_path", "pg_catalog, pg_temp", PGC_SUSET, PGC_S_SESSION);
	SetConfigOption("default_transaction_isolation", "read committed",
					PGC_SUSET, PGC_S_SESSION);
	SetConfigOption("default_transaction_read_only", "off", PGC_SUSET, PGC_S_SESSION);
	SetConfigOption("lock_timeout", "0", PGC_SUSET, PGC_S_SESSION);
	SetConfigOption("statement_timeout", "0", PGC_SUSET, PGC_S_SESSION);
	SetConfigOption("idle_in_transaction_session_timeout", "0", PGC_SUSET, PGC_S_SESSION);
	SetConfigOption("session_replication_role", "origin", PGC_SUSET, PGC_S_SESSION);

	ChunkContext = AllocSetContextCreate(TopMemoryContext, "jobq chunk",
										 ALLOCSET_DEFAULT_SIZES);
	JobContext = AllocSetContextCreate(TopMemoryContext, "jobq job",
									   ALLOCSET_DEFAULT_SIZES);

	/* cancel requests and timeouts only ever interrupt a job */
	HOLD_CANCEL_INTERRUPTS();

	/* what jobs leave in this session, from the first one on */
	JobqSessionInit();

	/* see JOBQ_WATCHDOG_MS */
	watchdog_timeout = RegisterTimeout(USER_TIMEOUT, jobq_watchdog);
}

/*
 * After an error outside any job (the worker's sigsetjmp): clean up as
 * postgres.c does.  The abort unlocked the jobs claimed; if one of them
 * was running, the journal entry still names it and is settled, so that
 * the attempt is counted; and the claim floors may lie above them.
 */
static void
worker_recover(void)
{
	error_context_stack = NULL;
	HOLD_INTERRUPTS();
	jobq_in_job = false;
	jobq_current_job_id = 0;
	chunk_njobs = 0;
	disable_all_timeouts(false);
	watchdog_armed = false;
	QueryCancelPending = false;
	QueryCancelHoldoffCount = 1;
	debug_query_string = NULL;

	EmitErrorReport();
	LWLockReleaseAll();
	AbortOutOfAnyTransaction();
	MemoryContextSwitchTo(TopMemoryContext);
	FlushErrorState();
	MemoryContextReset(ChunkContext);
	MemoryContextReset(JobContext);
	set_busy(false);
	pgstat_report_activity(STATE_IDLE, NULL);
	RESUME_INTERRUPTS();

	JobqSlotEndJob(my_slot);
	JobqJournalUnsettled(my_slot);
	JobqFloorsReset(JOBQ_FLOORS_WORKERS);
	claim_limit = 1;

	/* do not spin if the error repeats */
	(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
					 1000L, PG_WAIT_EXTENSION);
}

/* the database duties, each taken by whichever worker finds it due */
static void
worker_duties(void)
{
	if (JobqJournalSettleNeeded(my_slot))
		JobqJournalSettle(my_slot);
	if (JobqPruneTurn())
	{
		JobqSweepWaitingJobs();
		if (JobqPruneHistory() > 0)
			JobqPruneAgainSoon();
	}
	if (JobqLeaseExpiryTurn())
		JobqExpireLeases();
	/* dependents that their enqueue and their job's finish both missed */
	JobqRecheckDependents();
}

/*
 * Nothing due (n == 0, with next_due the next job's time), or no extension
 * yet (n < 0): sleep until the next job is due, the earliest lease of an
 * external executor may expire, statistics must be flushed, a commit
 * wakes us, or jobq.poll_interval passes.
 */
static void
worker_idle(int n, TimestampTz next_due)
{
	long		sleep_ms = jobq_poll_interval;
	long		stats_ms;

	claim_limit = 1;
	if (n == 0)
	{
		next_due = Min(next_due, JobqLeaseNextCheck());
		JobqSetNextDue(next_due);
	}
	if (n == 0 && next_due != DT_NOEND)
	{
		long		secs;
		int			usecs;

		TimestampDifference(GetCurrentTimestamp(), next_due, &secs, &usecs);
		sleep_ms = Min(sleep_ms, secs * 1000 + (usecs + 999) / 1000);
		sleep_ms = Max(sleep_ms, 1);
	}
	/* flush statistics; if some had to wait, wake up for them */
	stats_ms = pgstat_report_stat(false);
	if (stats_ms > 0)
		sleep_ms = Min(sleep_ms, stats_ms);
	pgstat_report_activity(STATE_IDLE, NULL);
	disarm_watchdog();
	(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
					 sleep_ms, PG_WAIT_EXTENSION);
}

void
JobqWorkerMain(Datum main_arg)
{
	sigjmp_buf	local_sigjmp_buf;
	uint32		generation;

	my_slot = DatumGetInt32(main_arg);
	memcpy(&generation, MyBgworkerEntry->bgw_extra, sizeof(generation));

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, jobq_worker_sigterm);
	pqsignal(SIGUSR2, jobq_worker_sigusr2);
	BackgroundWorkerUnblockSignals();

	worker_attach(generation);
	worker_baseline();

	if (sigsetjmp(local_sigjmp_buf, 1) != 0)
		worker_recover();
	PG_exception_stack = &local_sigjmp_buf;

	for (;;)
	{
		TimestampTz next_due = DT_NOEND;
		int			n;

		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}
		if (stop_requested())
			break;
		ResetLatch(MyLatch);

		worker_duties();
		n = run_chunk(&claim_limit, &next_due);
		if (n > 0)
		{
			/*
			 * Report table and transaction statistics (at most once a
			 * second): without them autovacuum would never learn of the
			 * dead tuples the queue leaves behind.
			 */
			pgstat_report_stat(false);
			pgstat_report_activity(STATE_IDLE, NULL);
			continue;
		}
		worker_idle(n, next_due);
	}

	proc_exit(0);
}
