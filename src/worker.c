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
 *	2. claim a batch in one short transaction (claim.c): the attempt is
 *	   counted and committed before anything runs;
 *	3. run the batch in execution transactions of at most
 *	   JOBQ_CHUNK_MAX_JOBS jobs or JOBQ_CHUNK_BUDGET_MS milliseconds, one
 *	   subtransaction per job; the jobs' outcomes are written in the same
 *	   transaction as their effects;
 *	4. with nothing due, sleep on the latch until the earliest future
 *	   run_at or jobq.poll_interval, whichever comes first.
 *
 * Batches adapt: a worker claims one job at first and doubles its claim up
 * to jobq.batch_size while jobs finish quickly; one slow job resets it to
 * one, and after a job slower than JOBQ_SLOW_JOB_MS the worker hands the
 * unstarted rest of its batch back (attempts not counted) and wakes idle
 * workers for it, so slow jobs spread over the pool instead of queueing
 * behind each other in one worker.  DROP EXTENSION waits for an execution
 * transaction: it locks jobq's tables first.
 *
 * Signals: SIGTERM (fast shutdown, pg_terminate_backend, DROP DATABASE
 * ... FORCE) cancels the job in hand; its subtransaction rolls back and
 * the job goes back to pending with its attempt not counted, together with
 * the claimed jobs not yet started; then the worker exits.  A job that
 * swallows the cancel is terminated after JOBQ_SHUTDOWN_GRACE_S seconds.  Cancel
 * interrupts are held everywhere except inside a job, so a cancel request
 * or a statement timeout never interrupts our own bookkeeping.
 *
 * An error outside a job (a bug, or the extension dropped under us) is
 * caught by the sigsetjmp block below: the transaction is aborted and the
 * jobs still marked running under our pid are handed back before the loop
 * goes on.
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
#include "storage/proc.h"
#include "tcop/tcopprot.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/timeout.h"
#include "utils/timestamp.h"

#include "jobq.h"

/* A job is "fast" when it takes less than this; fast jobs grow batches. */
#define JOBQ_FAST_JOB_US		2000

volatile sig_atomic_t jobq_in_job = false;
volatile sig_atomic_t jobq_shutdown_requested = false;

static int	my_slot = -1;
/* two batch contexts: the batch running, and the one claimed after it */
static MemoryContext BatchContext[2];
static MemoryContext ChunkContext = NULL;
static MemoryContext JobContext = NULL;

/*
 * A job that ignores the cancel of a SIGTERM (say, a plpgsql loop that
 * catches query_canceled) for this many seconds is terminated: the worker
 * exits with FATAL, which no job can catch, and the job is recovered with
 * its attempt counted.  Shutdown must not hang on a job.
 */
#define JOBQ_SHUTDOWN_GRACE_S	5

static volatile sig_atomic_t shutdown_ticks = 0;
static TimeoutId watchdog_timeout;

static void
arm_watchdog(void)
{
	enable_timeout_every(watchdog_timeout,
						 TimestampTzPlusMilliseconds(GetCurrentTimestamp(), 1000),
						 1000);
}

/*
 * Once a second: if a shutdown has been asked for and the job in hand still
 * runs after the grace period, escalate from cancel to die.
 */
static void
jobq_watchdog(void)
{
	if (jobq_shutdown_requested && jobq_in_job &&
		++shutdown_ticks >= JOBQ_SHUTDOWN_GRACE_S)
	{
		ProcDiePending = true;
		InterruptPending = true;
		SetLatch(MyLatch);
	}
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
 * Give the slot back on exit.  Registered before the database connection
 * exists, so it runs after the transaction has been aborted: once a slot
 * is free, the process that held it can no longer commit anything.
 */
static void
worker_detach(int code, Datum arg)
{
	int			slot = DatumGetInt32(arg);

	SpinLockAcquire(&JobqShared->mutex);
	if (JobqShared->workers[slot].pid == MyProcPid)
	{
		JobqShared->workers[slot].pid = 0;
		JobqShared->workers[slot].busy = false;
	}
	SpinLockRelease(&JobqShared->mutex);
}

static void
set_busy(bool busy)
{
	SpinLockAcquire(&JobqShared->mutex);
	JobqShared->workers[my_slot].busy = busy;
	SpinLockRelease(&JobqShared->mutex);
}

static bool
stop_requested(void)
{
	bool		stop;

	if (jobq_shutdown_requested)
		return true;
	SpinLockAcquire(&JobqShared->mutex);
	stop = JobqShared->workers[my_slot].stop_requested;
	SpinLockRelease(&JobqShared->mutex);
	return stop;
}

/*
 * Take and clear the shared "recover orphaned jobs" request.
 */
static bool
take_recovery_request(void)
{
	bool		requested;

	SpinLockAcquire(&JobqShared->mutex);
	requested = JobqShared->recovery_requested;
	JobqShared->recovery_requested = false;
	SpinLockRelease(&JobqShared->mutex);
	return requested;
}

/*
 * Is retention pruning due?  If so, this worker takes it.
 */
static bool
take_prune_turn(void)
{
	TimestampTz now = GetCurrentTimestamp();
	bool		mine = false;
	long		interval_ms;

	interval_ms = Min(10000L, Max(100L, (long) jobq_retention * 250L));

	SpinLockAcquire(&JobqShared->mutex);
	if (JobqShared->next_prune <= now)
	{
		JobqShared->next_prune = TimestampTzPlusMilliseconds(now, interval_ms);
		mine = true;
	}
	SpinLockRelease(&JobqShared->mutex);
	return mine;
}

static void
prune_again_soon(void)
{
	SpinLockAcquire(&JobqShared->mutex);
	JobqShared->next_prune = 0;
	SpinLockRelease(&JobqShared->mutex);
}

/*
 * Run a claimed batch, and adapt *claim_limit to how fast its jobs were:
 * doubled (up to jobq.batch_size) while jobs take under JOBQ_FAST_JOB_US
 * on average, back to one otherwise.
 *
 * If the batch ran to its end (no stop request, no slow job handed back),
 * the transaction that records the last outcomes also claims the next
 * batch, of up to *claim_limit jobs, into next_cxt: *next_jobs and
 * *next_n.  Otherwise *next_n is -1.
 */
static void
run_batch(JobqJob *jobs, int njobs, int *claim_limit, MemoryContext next_cxt,
		  JobqJob **next_jobs, int *next_n)
{
	TimestampTz batch_start = GetCurrentTimestamp();
	JobqOutcome *outcomes;
	int			next = 0;
	int			handed_back = 0;
	bool		stopping = false;

	*next_jobs = NULL;
	*next_n = -1;
	outcomes = MemoryContextAllocZero(CurrentMemoryContext,
									  sizeof(JobqOutcome) * njobs);

	while (next < njobs)
	{
		MemoryContext oldcxt = CurrentMemoryContext;
		TimestampTz chunk_start;
		int			first = next;

		/*
		 * The execution transaction.  Outcomes and cached role settings live
		 * in ChunkContext, reset after the commit; each job's own work lives
		 * in JobContext, reset after the job.
		 */
		SetCurrentStatementStartTimestamp();
		StartTransactionCommand();
		MemoryContextSwitchTo(ChunkContext);
		JobqForgetRoleSettings();

		/* the extension was dropped since the claim: the jobs are gone */
		if (!JobqLockTables())
		{
			CommitTransactionCommand();
			MemoryContextSwitchTo(oldcxt);
			MemoryContextReset(ChunkContext);
			break;
		}
		chunk_start = GetCurrentTimestamp();

		while (next < njobs)
		{
			CHECK_FOR_INTERRUPTS();
			if (stop_requested())
			{
				/* hand back what has not started; attempts not counted */
				stopping = true;
				for (; next < njobs; next++)
					outcomes[next].kind = JOBQ_RELEASE;
				break;
			}

			JobqExecuteJob(&jobs[next], &outcomes[next], JobContext);
			MemoryContextReset(JobContext);
			next++;

			/*
			 * A slow job: hand back the rest of the batch, attempts not
			 * counted, and wake idle workers for it once this commits.
			 */
			if (next < njobs &&
				TimestampDifferenceExceeds(outcomes[next - 1].started_at,
										   outcomes[next - 1].finished_at,
										   JOBQ_SLOW_JOB_MS))
			{
				handed_back = njobs - next;
				for (; next < njobs; next++)
					outcomes[next].kind = JOBQ_RELEASE;
				break;
			}

			if (next - first >= JOBQ_CHUNK_MAX_JOBS ||
				TimestampDifferenceExceeds(chunk_start, GetCurrentTimestamp(),
										   JOBQ_CHUNK_BUDGET_MS))
				break;
		}

		pgstat_report_activity(STATE_RUNNING, "jobq: recording job outcomes");
		JobqRecordOutcomes(&jobs[first], &outcomes[first], next - first);

		/* the last chunk of a batch that ran to its end claims the next */
		if (next == njobs && handed_back == 0 && !stopping && !stop_requested())
		{
			if (!TimestampDifferenceExceeds(batch_start, GetCurrentTimestamp(),
											(int) ((int64) njobs * JOBQ_FAST_JOB_US / 1000)))
				*claim_limit = Min(*claim_limit * 2, jobq_batch_size);
			else
				*claim_limit = 1;
			*next_n = JobqClaimInTransaction(*claim_limit, next_cxt, next_jobs,
											 NULL);
		}
		else
			*claim_limit = 1;
		CommitTransactionCommand();
		MemoryContextSwitchTo(oldcxt);
		MemoryContextReset(ChunkContext);
	}

	if (handed_back > 0)
		JobqWakeWorkers(handed_back);
}

void
JobqWorkerMain(Datum main_arg)
{
	sigjmp_buf	local_sigjmp_buf;
	uint32		generation;
	volatile bool release_needed = false;
	volatile int claim_limit = 1;
	JobqJob    *volatile jobs = NULL;
	volatile int njobs = 0;
	volatile int cur = 0;
	char		appname[NAMEDATALEN];

	my_slot = DatumGetInt32(main_arg);
	memcpy(&generation, MyBgworkerEntry->bgw_extra, sizeof(generation));

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, jobq_worker_sigterm);
	BackgroundWorkerUnblockSignals();

	/*
	 * Take the slot before anything else: the slot says "this pid may hold
	 * running jobs", so it must exist before the first claim.
	 */
	SpinLockAcquire(&JobqShared->mutex);
	if (JobqShared->launcher_generation != generation ||
		JobqShared->workers[my_slot].pid != 0)
	{
		/* started for a launcher that is gone */
		SpinLockRelease(&JobqShared->mutex);
		proc_exit(0);
	}
	JobqShared->workers[my_slot].pid = MyProcPid;
	JobqShared->workers[my_slot].pgprocno = MyProc->pgprocno;
	JobqShared->workers[my_slot].started_at = GetCurrentTimestamp();
	JobqShared->workers[my_slot].generation = generation;
	JobqShared->workers[my_slot].busy = false;
	SpinLockRelease(&JobqShared->mutex);
	before_shmem_exit(worker_detach, Int32GetDatum(my_slot));

	BackgroundWorkerInitializeConnection(jobq_database, NULL, 0);

	snprintf(appname, sizeof(appname), "jobq worker %d", my_slot + 1);
	SetConfigOption("application_name", appname, PGC_USERSET, PGC_S_SESSION);

	/*
	 * The worker's own baseline, whatever ALTER DATABASE or ALTER ROLE set
	 * for the database or the bootstrap superuser: jobq's statements
	 * resolve operators and functions in pg_catalog only, run read-write
	 * in read committed, and are not cut short by timeouts; triggers and
	 * foreign keys fire (session_replication_role).  Jobs get a login-like
	 * baseline of their own on top (execute.c).
	 */
	SetConfigOption("search_path", "pg_catalog, pg_temp", PGC_SUSET, PGC_S_SESSION);
	SetConfigOption("default_transaction_isolation", "read committed",
					PGC_SUSET, PGC_S_SESSION);
	SetConfigOption("default_transaction_read_only", "off", PGC_SUSET, PGC_S_SESSION);
	SetConfigOption("lock_timeout", "0", PGC_SUSET, PGC_S_SESSION);
	SetConfigOption("statement_timeout", "0", PGC_SUSET, PGC_S_SESSION);
	SetConfigOption("idle_in_transaction_session_timeout", "0", PGC_SUSET, PGC_S_SESSION);
	SetConfigOption("session_replication_role", "origin", PGC_SUSET, PGC_S_SESSION);

	BatchContext[0] = AllocSetContextCreate(TopMemoryContext, "jobq batch",
											ALLOCSET_DEFAULT_SIZES);
	BatchContext[1] = AllocSetContextCreate(TopMemoryContext, "jobq batch",
											ALLOCSET_DEFAULT_SIZES);
	ChunkContext = AllocSetContextCreate(TopMemoryContext, "jobq chunk",
										 ALLOCSET_DEFAULT_SIZES);
	JobContext = AllocSetContextCreate(TopMemoryContext, "jobq job",
									   ALLOCSET_DEFAULT_SIZES);

	/* cancel requests and timeouts only ever interrupt a job */
	HOLD_CANCEL_INTERRUPTS();

	/* see JOBQ_SHUTDOWN_GRACE_S */
	watchdog_timeout = RegisterTimeout(USER_TIMEOUT, jobq_watchdog);
	arm_watchdog();

	if (sigsetjmp(local_sigjmp_buf, 1) != 0)
	{
		/* An error outside any job: clean up like postgres.c does. */
		error_context_stack = NULL;
		HOLD_INTERRUPTS();
		jobq_in_job = false;
		disable_all_timeouts(false);
		arm_watchdog();
		QueryCancelPending = false;
		QueryCancelHoldoffCount = 1;
		debug_query_string = NULL;

		EmitErrorReport();
		AbortOutOfAnyTransaction();
		MemoryContextSwitchTo(TopMemoryContext);
		FlushErrorState();
		MemoryContextReset(BatchContext[0]);
		MemoryContextReset(BatchContext[1]);
		MemoryContextReset(ChunkContext);
		MemoryContextReset(JobContext);
		set_busy(false);
		pgstat_report_activity(STATE_IDLE, NULL);
		RESUME_INTERRUPTS();

		/* jobs we claimed are still marked running under our pid */
		release_needed = true;
		claim_limit = 1;
		jobs = NULL;
		njobs = 0;

		/* do not spin if the error repeats */
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 1000L, PG_WAIT_EXTENSION);
	}
	PG_exception_stack = &local_sigjmp_buf;

	/* whoever starts first after a death or a restart looks for orphans */
	SpinLockAcquire(&JobqShared->mutex);
	JobqShared->recovery_requested = true;
	SpinLockRelease(&JobqShared->mutex);

	for (;;)
	{
		TimestampTz next_due = DT_NOEND;
		long		sleep_ms;

		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}
		/* a batch claimed ahead is handed back by run_batch first */
		if (njobs <= 0 && stop_requested())
			break;

		ResetLatch(MyLatch);

		if (release_needed)
		{
			JobqReleaseOwnJobs();
			release_needed = false;
		}
		if (take_recovery_request())
			JobqRecoverOrphans();
		if (take_prune_turn() && JobqPruneHistory() > 0)
			prune_again_soon();

		if (njobs <= 0)
		{
			JobqJob    *claimed;

			MemoryContextReset(BatchContext[cur]);
			MemoryContextSwitchTo(BatchContext[cur]);
			njobs = JobqClaim(claim_limit, &claimed, &next_due);
			jobs = claimed;
		}
		if (njobs > 0)
		{
			int			other = 1 - cur;
			JobqJob    *next_jobs;
			int			next_n;
			int			limit = claim_limit;

			/* the next batch, claimed at the end of this one, goes there */
			MemoryContextReset(BatchContext[other]);
			MemoryContextSwitchTo(BatchContext[cur]);

			set_busy(true);
			run_batch(jobs, njobs, &limit, BatchContext[other],
					  &next_jobs, &next_n);
			set_busy(false);
			claim_limit = limit;

			/*
			 * Report table and transaction statistics (at most once a
			 * second): without them autovacuum would never learn of the
			 * dead tuples the queue leaves behind.
			 */
			pgstat_report_stat(false);

			if (next_n > 0)
			{
				jobs = next_jobs;
				njobs = next_n;
				cur = other;
			}
			else
			{
				jobs = NULL;
				njobs = 0;
			}
			pgstat_report_activity(STATE_IDLE, NULL);
			continue;
		}

		/* Nothing due (or no extension yet): sleep. */
		claim_limit = 1;
		sleep_ms = jobq_poll_interval;
		if (njobs == 0 && next_due != DT_NOEND)
		{
			long		secs;
			int			usecs;

			JobqSetNextDue(next_due);
			TimestampDifference(GetCurrentTimestamp(), next_due, &secs, &usecs);
			sleep_ms = Min(sleep_ms, secs * 1000 + (usecs + 999) / 1000);
			sleep_ms = Max(sleep_ms, 1);
		}
		else if (njobs == 0)
			JobqSetNextDue(DT_NOEND);

		{
			/* flush statistics; if some had to wait, wake up for them */
			long		stats_ms = pgstat_report_stat(false);

			if (stats_ms > 0)
				sleep_ms = Min(sleep_ms, stats_ms);
		}
		pgstat_report_activity(STATE_IDLE, NULL);
		(void) WaitLatch(MyLatch,
						 WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 sleep_ms, PG_WAIT_EXTENSION);
	}

	proc_exit(0);
}
