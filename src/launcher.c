/*-------------------------------------------------------------------------
 *
 * launcher.c
 *		The jobq launcher: keeps the worker pool at jobq.workers.
 *
 * The launcher is a static background worker registered in _PG_init.  It
 * starts only once the server accepts writes, so nothing of jobq runs on a
 * hot standby; after promotion the postmaster starts it.  It connects to
 * no database (it reads only the shared catalog pg_database), so it never
 * stands in the way of DROP DATABASE; the workers it starts connect to
 * jobq.database.
 *
 * Each loop it reconciles the pool with jobq.workers: a worker that has
 * stopped, for whatever reason, is noted (its jobs are recovered by the
 * other workers and by its replacement) and restarted; slots past
 * jobq.workers are asked to stop after the job in hand, and asked to stay
 * again if the pool grows back before they have gone.  It is woken by
 * the postmaster when a worker starts or stops (bgw_notify_pid), by a
 * worker that leaves its slot, and by SIGHUP.  A worker that exits after
 * it reached its main loop is replaced at once, whatever ended it
 * (terminated, killed, ended a job by exiting); one that keeps failing
 * before it gets there (for instance because jobq.database was dropped)
 * is restarted with a growing delay.  The log says which.
 *
 * The launcher is not needed for jobs to run.  When it exits, the workers
 * go on claiming and running jobs; the postmaster starts a new launcher
 * a second later, which adopts the running workers (it finds them in
 * their slots, and learns of their exit from the slots too) instead of
 * restarting them.
 *
 * IDENTIFICATION
 *		src/launcher.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <signal.h>

#include "access/xact.h"
#include "access/heapam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/tableam.h"
#include "catalog/pg_database.h"
#include "utils/snapmgr.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "utils/guc.h"
#include "utils/timestamp.h"

#include "jobq.h"
#include "floors.h"
#include "journal.h"
#include "slots.h"

#define JOBQ_MAX_RESTART_DELAY_MS 60000

typedef struct LauncherSlot
{
	BackgroundWorkerHandle *handle; /* a worker this launcher registered */
	pid_t		adopted;		/* or one a previous launcher started */
	pid_t		pid;			/* its process, once known */
	bool		stop_asked;		/* asked to stop since it started */
	TimestampTz last_start;
	int			failed_starts;	/* consecutive exits before the main loop */
} LauncherSlot;

static LauncherSlot pool[JOBQ_MAX_WORKERS];
static uint32 my_generation;
static bool database_missing_logged = false;
static bool start_failure_logged = false;

void
JobqRegisterLauncher(void)
{
	BackgroundWorker worker;

	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS |
		BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
	/* workers run on without it: a second is enough */
	worker.bgw_restart_time = 1;
	snprintf(worker.bgw_library_name, BGW_MAXLEN, "jobq");
	snprintf(worker.bgw_function_name, BGW_MAXLEN, "JobqLauncherMain");
	snprintf(worker.bgw_name, BGW_MAXLEN, "jobq launcher");
	snprintf(worker.bgw_type, BGW_MAXLEN, "jobq launcher");
	RegisterBackgroundWorker(&worker);
}

/*
 * On exit, give up the launcher's place in shared memory.  The workers go
 * on; the next launcher adopts them.
 */
static void
launcher_detach(int code, Datum arg)
{
	JobqLauncherEnd();
}

/*
 * Become the launcher, with a new generation (a worker registered by a
 * previous launcher that has not started yet steps aside), and adopt the
 * workers that run.
 */
static void
launcher_take_over(void)
{
	int			nadopted = 0;
	int			i;

	my_generation = JobqLauncherBegin();
	for (i = 0; i < JOBQ_MAX_WORKERS; i++)
	{
		pid_t		pid = JobqSlotHolder(i);

		if (pid != 0)
		{
			pool[i].adopted = pid;
			pool[i].pid = pid;
			nadopted++;
		}
	}
	if (nadopted > 0)
		ereport(LOG,
				(errmsg("jobq launcher adopted %d running workers", nadopted)));

	/*
	 * A worker may have died while no launcher watched: every worker
	 * settles the journal again, and claims forget the floors.
	 */
	JobqJournalNoteDeath();
	JobqFloorsReset(JOBQ_FLOORS_WORKERS);
	JobqWakeAllWorkers();
}

/*
 * Does jobq.database exist?  Logs once while it does not.
 */
static bool
database_exists(void)
{
	bool		exists;

	Relation	rel;
	TableScanDesc scan;
	HeapTuple	tup;

	/*
	 * A plain heap scan: without a database, the launcher can read shared
	 * catalogs but cannot use their indexes (get_database_oid does).
	 */
	exists = false;
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	(void) GetTransactionSnapshot();
	rel = table_open(DatabaseRelationId, AccessShareLock);
	scan = table_beginscan_catalog(rel, 0, NULL);
	while ((tup = heap_getnext(scan, ForwardScanDirection)) != NULL)
	{
		Form_pg_database db = (Form_pg_database) GETSTRUCT(tup);

		if (strcmp(NameStr(db->datname), jobq_database) == 0)
		{
			exists = true;
			break;
		}
	}
	table_endscan(scan);
	table_close(rel, AccessShareLock);
	CommitTransactionCommand();

	if (!exists && !database_missing_logged)
	{
		ereport(LOG,
				(errmsg("jobq is waiting for database \"%s\" to be created",
						jobq_database),
				 errdetail("Workers start when the database named by \"jobq.database\" exists.")));
		database_missing_logged = true;
	}
	else if (exists)
		database_missing_logged = false;

	return exists;
}

/*
 * Start a worker in slot i.  Returns false if the postmaster has no free
 * background worker slot.
 */
static bool
start_worker(int i)
{
	BackgroundWorker worker;

	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS |
		BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
	worker.bgw_restart_time = BGW_NEVER_RESTART;
	snprintf(worker.bgw_library_name, BGW_MAXLEN, "jobq");
	snprintf(worker.bgw_function_name, BGW_MAXLEN, "JobqWorkerMain");
	snprintf(worker.bgw_name, BGW_MAXLEN, "jobq worker %d", i + 1);
	snprintf(worker.bgw_type, BGW_MAXLEN, "jobq worker");
	worker.bgw_main_arg = Int32GetDatum(i);
	memcpy(worker.bgw_extra, &my_generation, sizeof(my_generation));
	worker.bgw_notify_pid = MyProcPid;

	/* a fresh start in this slot: forget an old stop request */
	JobqSlotPrepare(i);
	pool[i].stop_asked = false;
	pool[i].pid = 0;

	pool[i].last_start = GetCurrentTimestamp();
	if (!RegisterDynamicBackgroundWorker(&worker, &pool[i].handle))
	{
		pool[i].handle = NULL;
		if (!start_failure_logged)
			ereport(WARNING,
					(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
					 errmsg("could not start jobq worker %d", i + 1),
					 errhint("Raise \"max_worker_processes\" or lower \"jobq.workers\".")));
		start_failure_logged = true;
		return false;
	}
	start_failure_logged = false;
	return true;
}

/* how long to wait before starting slot i again after failed starts */
static long
restart_delay(int i)
{
	long		delay = 1000L << Min(pool[i].failed_starts - 1, 6);

	return Min(delay, JOBQ_MAX_RESTART_DELAY_MS);
}

/*
 * The worker of slot i has stopped: note why, and say so.  Returns
 * whether it may have left a journal entry to settle.
 */
static bool
worker_stopped(int i)
{
	bool		ready;
	bool		recycled;
	bool		stopping;

	JobqSlotExitState(i, &ready, &recycled, &stopping);
	stopping = stopping || pool[i].stop_asked;
	pool[i].stop_asked = false;

	if (!ready)
	{
		/* it never reached its main loop: start it again after a while */
		pool[i].failed_starts++;
		ereport(LOG,
				(errmsg("jobq worker %d failed to start; starting it again in %ld ms",
						i + 1, restart_delay(i))));
		return true;
	}
	pool[i].failed_starts = 0;
	if (recycled)
	{
		/* exited between jobs for a fresh session, with no journal entry */
		return false;
	}
	if (stopping && i >= jobq_workers)
		ereport(DEBUG1,
				(errmsg("jobq worker %d stopped: the pool shrank", i + 1)));
	else if (pool[i].pid != 0)
		ereport(LOG,
				(errmsg("jobq worker %d (PID %d) exited; starting a new one at once",
						i + 1, (int) pool[i].pid),
				 errdetail("A worker that had started is replaced without delay, whatever ended it.")));
	else
		ereport(LOG,
				(errmsg("jobq worker %d exited; starting a new one at once", i + 1),
				 errdetail("A worker that had started is replaced without delay, whatever ended it.")));
	return true;
}

/*
 * Bring the pool in line with jobq.workers.  Returns how long the launcher
 * may sleep before it must look again.
 */
static long
reconcile_pool(void)
{
	TimestampTz now = GetCurrentTimestamp();
	long		sleep_ms = 60000;
	bool		died = false;
	bool		db_checked = false;
	bool		db_ok = false;
	int			i;

	/* Collect workers that have stopped. */
	for (i = 0; i < JOBQ_MAX_WORKERS; i++)
	{
		pid_t		pid;
		bool		stopped = false;

		if (pool[i].handle != NULL)
		{
			switch (GetBackgroundWorkerPid(pool[i].handle, &pid))
			{
				case BGWH_STOPPED:
					pfree(pool[i].handle);
					pool[i].handle = NULL;
					stopped = true;
					break;
				case BGWH_STARTED:
					pool[i].pid = pid;
					break;
				case BGWH_POSTMASTER_DIED:
					proc_exit(1);
					break;
				default:
					break;
			}
		}
		else if (pool[i].adopted != 0 && JobqSlotHolder(i) != pool[i].adopted)
		{
			pool[i].adopted = 0;
			stopped = true;
		}
		if (stopped && worker_stopped(i))
			died = true;
	}

	if (died)
	{
		/* the dead worker's journal entry must be settled before claims */
		JobqJournalNoteDeath();
		/* its claimed jobs are claimable again, wherever the floors are */
		JobqFloorsReset(JOBQ_FLOORS_WORKERS);
		JobqWakeAllWorkers();
	}

	for (i = 0; i < JOBQ_MAX_WORKERS; i++)
	{
		bool		held = pool[i].handle != NULL || pool[i].adopted != 0;

		if (i < jobq_workers && held)
		{
			/* the pool grew back before a stopping worker had gone */
			if (pool[i].stop_asked)
				JobqSlotCancelStop(i);
		}
		else if (i < jobq_workers)
		{
			if (pool[i].failed_starts > 0)
			{
				long		delay = restart_delay(i);
				TimestampTz when;

				delay = Min(delay, JOBQ_MAX_RESTART_DELAY_MS);
				when = TimestampTzPlusMilliseconds(pool[i].last_start, delay);
				if (when > now)
				{
					long		secs;
					int			usecs;

					TimestampDifference(now, when, &secs, &usecs);
					sleep_ms = Min(sleep_ms, secs * 1000 + usecs / 1000 + 1);
					continue;
				}
			}
			if (!db_checked)
			{
				db_ok = database_exists();
				db_checked = true;
			}
			if (!db_ok)
			{
				sleep_ms = Min(sleep_ms, 1000);
				break;
			}
			if (!start_worker(i))
			{
				sleep_ms = Min(sleep_ms, 5000);
				break;
			}
		}
		else if (i >= jobq_workers && held && !pool[i].stop_asked)
		{
			JobqSlotRequestStop(i);
			pool[i].stop_asked = true;
		}
	}

	return sleep_ms;
}

void
JobqLauncherMain(Datum main_arg)
{
	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, SignalHandlerForShutdownRequest);
	BackgroundWorkerUnblockSignals();

	/* no database: only shared catalogs (pg_database) are read */
	BackgroundWorkerInitializeConnection(NULL, NULL, 0);
	pgstat_report_appname("jobq launcher");

	before_shmem_exit(launcher_detach, (Datum) 0);
	launcher_take_over();

	ereport(LOG,
			(errmsg("jobq launcher started"),
			 errdetail("Workers run jobs in database \"%s\".", jobq_database)));

	for (;;)
	{
		long		sleep_ms;

		CHECK_FOR_INTERRUPTS();
		if (ShutdownRequestPending)
			break;
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}

		pgstat_report_activity(STATE_RUNNING, "reconciling the worker pool");
		sleep_ms = reconcile_pool();
		pgstat_report_activity(STATE_IDLE, NULL);

		(void) WaitLatch(MyLatch,
						 WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 sleep_ms, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
	}

	/* exit code 1: restarted by the postmaster unless it is shutting down */
	proc_exit(1);
}
