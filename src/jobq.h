/*-------------------------------------------------------------------------
 *
 * jobq.h
 *		Declarations shared by the jobq source files.
 *
 * jobq runs one static background worker, the launcher, and a pool of
 * dynamic workers that it starts.  Each file below owns its part of the
 * shared state (slots.c the worker slots, floors.c the claim floors, and
 * so on) and is the only one to touch it; doc/design.md maps the files to
 * their concerns and follows a job through them.
 *
 * IDENTIFICATION
 *		src/jobq.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef JOBQ_H
#define JOBQ_H

#include "postgres.h"

#include <signal.h>

#include "access/attnum.h"
#include "access/tableam.h"
#include "access/tupdesc.h"
#include "executor/spi.h"
#include "datatype/timestamp.h"
#include "fmgr.h"
#include "nodes/execnodes.h"
#include "storage/itemptr.h"
#include "port/atomics.h"
#include "storage/condition_variable.h"
#include "storage/spin.h"
#include "utils/array.h"
#include "utils/relcache.h"

/* Upper bound of jobq.workers; the shared segment has this many slots. */
#define JOBQ_MAX_WORKERS		64

/* Documented range of a job's priority (higher runs first). */
#define JOBQ_MIN_PRIORITY		(-1000)
#define JOBQ_MAX_PRIORITY		1000

/* Upper bound of max_attempts. */
#define JOBQ_MAX_ATTEMPTS		1000

/* Longest dedup key, in bytes (it is a key of a B-tree index). */
#define JOBQ_MAX_DEDUP_KEY		1024

/* Queue names are identifiers: at most NAMEDATALEN - 1 bytes. */
#define JOBQ_MAX_QUEUE_NAME		(NAMEDATALEN - 1)

/*
 * An execution transaction commits once this many of its committed
 * subtransactions (jobs that wrote, and their own savepoints) have XIDs,
 * staying below the 64 that PGPROC caches: beyond, every snapshot in the
 * server would have to look into pg_subtrans.  Jobs that only read take
 * no XID and do not count.
 */
#define JOBQ_CHUNK_MAX_SUBXIDS	63

/*
 * It also commits after JOBQ_CHUNK_BUDGET_MS milliseconds of jobs, so that
 * one slow job never holds finished ones uncommitted; or, when commits
 * are slow (a busy disk), after up to JOBQ_CHUNK_COMMIT_FACTOR times the
 * time its recent commits took, at most JOBQ_CHUNK_BUDGET_MAX_MS, so that
 * waiting for WAL to be flushed stays a small part of a worker's time.
 */
#define JOBQ_CHUNK_BUDGET_MS	10
#define JOBQ_CHUNK_COMMIT_FACTOR	4
#define JOBQ_CHUNK_BUDGET_MAX_MS	100

/*
 * After a job that took this long, a worker hands the rest of its batch
 * back, so that idle workers can take those jobs instead of waiting.
 */
#define JOBQ_SLOW_JOB_MS		20

/* Longest retry delay, whatever the attempt number. */
#define JOBQ_MAX_RETRY_DELAY_MS	(3600 * 1000)

/* One worker slot in shared memory (slots.c); other files see copies. */
typedef struct JobqWorkerSlot
{
	pid_t		pid;			/* 0 while the slot is free */
	int			pgprocno;		/* for the worker's latch */
	TimestampTz started_at;		/* when the worker took the slot */
	uint32		generation;		/* launcher generation that started it */
	bool		busy;			/* executing jobs (will claim again) */
	bool		stop_requested; /* pool shrank: finish and exit */
	bool		ready;			/* reached its main loop since its start */
	bool		recycled;		/* exited between jobs for a fresh session */
	int64		job_id;			/* job being executed, 0 if none */
	Oid			job_owner;		/* its owner */
	int32		job_attempt;	/* its attempt number */
	TimestampTz job_started_at; /* when that attempt started */
	char		job_queue[NAMEDATALEN]; /* its queue */
	/* outcomes of the jobs this worker ran, counted when they commit */
	uint64		n_succeeded;
	uint64		n_retried;
	uint64		n_failed;
} JobqWorkerSlot;

/*
 * Claim floors (claim.c): per priority level, a key (run_at, id) below
 * which no job of that level is claimable, so that claims start there
 * instead of walking the dead entries at the head of the claim index.
 */
#define JOBQ_FLOOR_LEVELS		16
/* the floors' safety-net rediscovery comes every this many poll intervals */
#define JOBQ_FLOOR_RESCAN_POLLS	12

typedef struct JobqFloor
{
	int16		priority;
	TimestampTz run_at;
	int64		id;
} JobqFloor;

/* Keys compare by (run_at, id) within one priority level. */
static inline bool
JobqFloorKeyLess(TimestampTz run_at, int64 id, const JobqFloor *f)
{
	return run_at < f->run_at || (run_at == f->run_at && id < f->id);
}

/* Why a worker ended a job by exiting (see worker.c, the watchdog). */
typedef enum JobqEscalation
{
	JOBQ_ESCALATE_NONE = 0,
	JOBQ_ESCALATE_TIMEOUT,		/* ran past timeout + jobq.cancel_grace */
	JOBQ_ESCALATE_CANCEL,		/* ignored jobq.cancel() for the grace */
	JOBQ_ESCALATE_SHUTDOWN		/* ignored a shutdown for the grace */
} JobqEscalation;


/* guc.c */
extern char *jobq_database;
extern int	jobq_workers;
extern int	jobq_poll_interval;
extern int	jobq_batch_size;
extern int	jobq_default_max_attempts;
extern int	jobq_default_timeout;
extern int	jobq_retention;
extern int	jobq_retry_delay;
extern int	jobq_max_payload_size;
extern int	jobq_max_command_size;
extern int	jobq_cancel_grace;
extern void JobqDefineGucs(void);
extern bool jobq_preloaded;
extern void JobqCheckPreloaded(void);

/* schema.c: the installed version of the extension and its tables */
typedef enum JobqRel
{
	JOBQ_REL_JOB,
	JOBQ_REL_HISTORY,
	JOBQ_REL_JOB_SEQ,
	JOBQ_REL_TASK,
	JOBQ_REL_QUEUES,
	JOBQ_REL_ROLE_LIMITS,
	JOBQ_REL_JOB_PKEY,
	JOBQ_REL_EXTERNAL_IDX,
	JOBQ_NUM_RELS
} JobqRel;

typedef struct JobqSchema
{
	bool		installed;		/* the extension and its two job tables */
	int			version;		/* 0.5.0 is 500; 0 if not installed */
	Oid			relids[JOBQ_NUM_RELS];	/* InvalidOid where missing */
	Oid			owner;			/* owner of the tables */
	bool		tasks;			/* tasks, dedup keys, dependencies (0.3.0) */
	bool		role_limits;	/* jobq.role_limits, jobq.job.counted (0.4.0) */
	bool		dedup_per_owner;	/* dedup keys unique per owner (0.4.0) */
	bool		job_state;		/* jobq.job.state (before 0.5.0) */
	bool		executors;		/* external tasks and leases (0.5.0) */
	uint64		generation;		/* changes whenever any of the above does */
} JobqSchema;

extern const JobqSchema *JobqSchemaGet(void);
extern const JobqSchema *JobqSchemaRequire(void);
extern Oid	JobqSchemaRelid(const char *relname);
extern void JobqSchemaInstallHooks(void);
extern bool JobqLockTables(void);

/* jobq.c: the module's entry point and its shared memory */

/* slots.c: the launcher and the worker slots */
extern Size JobqSlotsShmemSize(void);
extern void JobqSlotsShmemInit(void);
extern bool JobqSlotsSnapshot(JobqWorkerSlot *out);
extern void JobqSlotsFree(bool *free_slot);
extern pid_t JobqSlotHolder(int slot);
extern uint32 JobqLauncherBegin(void);
extern void JobqLauncherEnd(void);
extern void JobqSlotPrepare(int slot);
extern void JobqSlotExitState(int slot, bool *ready, bool *recycled,
							  bool *stopping);
extern void JobqSlotRequestStop(int slot);
extern void JobqSlotCancelStop(int slot);
extern bool JobqSlotAttach(int slot, uint32 generation, bool *recycled);
extern void JobqSlotReady(int slot);
extern void JobqSlotDetach(int slot);
extern void JobqSlotSetBusy(int slot, bool busy);
extern bool JobqSlotStopRequested(int slot);
extern bool JobqSlotBeginJob(int slot, int64 job_id, Oid owner, int32 attempt,
							 TimestampTz started, const char *queue, int limit,
							 int owner_limit);
extern void JobqSlotEndJob(int slot);
extern void JobqSlotCountOutcomes(int slot, uint64 succeeded, uint64 retried,
								  uint64 failed);
extern void JobqSlotRecycle(int slot);
extern void JobqWakeWorkers(int n);
extern void JobqWakeAllWorkers(void);
extern void JobqSignalJobWorker(int64 id);
extern void JobqEscalationNote(int slot, int64 id, JobqEscalation reason);
extern JobqEscalation JobqEscalationPeek(int slot, int64 id);
extern JobqEscalation JobqEscalationTake(int slot, int64 id);
extern int	JobqQueueRunning(const char *queue);
extern int	JobqOwnerRunning(Oid owner);

/* floors.c: the claim floors, one set per claim index */
typedef enum JobqFloorSetId
{
	JOBQ_FLOORS_WORKERS,		/* job_claim_idx, claimed by worker slot */
	JOBQ_FLOORS_EXECUTORS,		/* job_external_idx, by jobq.claim() */
	JOBQ_NUM_FLOOR_SETS
} JobqFloorSetId;

/* executors' claims that may use the floors at once */
#define JOBQ_FLOOR_EXECUTOR_CLAIMERS	64

extern Size JobqFloorsShmemSize(void);
extern void JobqFloorsShmemInit(void);
extern void JobqFloorsNoteKeys(JobqFloorSetId set, const JobqFloor *keys, int n,
							   bool overflow);
extern bool JobqFloorsGet(JobqFloorSetId set, int16 *levels, JobqFloor *keys,
						  int *n);
extern int	JobqFloorClaimerTake(void);
extern void JobqFloorClaimerGive(int slot);
extern bool JobqFloorClaimBegin(JobqFloorSetId set, int slot, int16 priority,
								JobqFloor *floor);
extern void JobqFloorClaimEnd(JobqFloorSetId set, int slot, int16 priority,
							  bool raise, TimestampTz run_at, int64 id);
extern void JobqFloorLower(JobqFloorSetId set, int16 priority,
						   TimestampTz run_at, int64 id);
extern void JobqFloorsReset(JobqFloorSetId set);
extern bool JobqFloorsRediscoveryDue(JobqFloorSetId set);
extern void JobqFloorsInstall(JobqFloorSetId set, const int16 *levels, int n);
extern void JobqFloorsDiscover(JobqFloorSetId set, SPIPlanPtr plan);

/* wakeup.c: waking workers and waiters when a transaction commits */
extern Size JobqWakeupShmemSize(void);
extern void JobqWakeupShmemInit(void);
extern void JobqSetNextDue(TimestampTz due);
extern void JobqWakeWorkerBy(TimestampTz t);
extern void JobqNoteEnqueue(TimestampTz run_at, int16 priority, int64 id,
							bool external);
extern void JobqClaimWaitBegin(void);
extern void JobqClaimWaitEnd(void);
extern void JobqWakeClaimersAtCommit(void);
extern void JobqNoteFinishedAtCommit(const int64 *ids, int n);
extern void JobqWakeAllAtCommit(void);

/* last_error of a job that jobq.cancel() cancelled */
#define JOBQ_CANCELLED_MESSAGE	"job cancelled by jobq.cancel()"

/* launcher.c */
extern void JobqRegisterLauncher(void);
extern PGDLLEXPORT void JobqLauncherMain(Datum main_arg);

/* worker.c */
extern PGDLLEXPORT void JobqWorkerMain(Datum main_arg);
extern volatile sig_atomic_t jobq_in_job;
extern volatile sig_atomic_t jobq_shutdown_requested;
extern volatile int64 jobq_current_job_id;
extern bool JobqHeldByThisWorker(int64 id);

/* A claimed job, as the worker holds it between claim and outcome. */
typedef struct JobqJob
{
	int64		id;
	Oid			owner;
	char	   *queue;
	char	   *command;		/* SQL, or NULL for a task */
	char	   *task;			/* registered task, or NULL for SQL */
	Datum		payload;		/* the task's argument (jsonb) */
	int64		timeout_ms;		/* 0: no limit */
	int32		attempts;		/* this attempt's number, from 1 */
	int32		max_attempts;
	int16		priority;
	TimestampTz run_at;
	ItemPointerData tid;		/* its row, locked by the claim */
	bool		external;		/* a job of an external task (lease.c) */
} JobqJob;

/* What became of a claimed job. */
typedef enum JobqOutcomeKind
{
	JOBQ_SUCCEEDED,
	JOBQ_RETRY,					/* error with attempts left */
	JOBQ_FAILED,				/* error, no attempts left, or permanent */
	JOBQ_CANCELLED,				/* by jobq.cancel(): effects rolled back */
	JOBQ_RELEASE				/* interrupted by shutdown: stays pending,
								 * attempt not counted */
} JobqOutcomeKind;

typedef struct JobqOutcome
{
	JobqOutcomeKind kind;
	Datum		result;			/* jsonb, or 0 for null */
	char	   *error;			/* NULL if none */
	char		sqlstate[6];	/* "" if none */
	TimestampTz started_at;
	TimestampTz finished_at;
	TimestampTz next_run_at;	/* for JOBQ_RETRY */
	int32		pid;			/* the worker's (recorded as worker_pid), 0 */
} JobqOutcome;

/* claim.c: claiming due jobs */
extern int	JobqClaimInTransaction(int slot, int limit, MemoryContext cxt,
								   JobqJob **jobs, TimestampTz *next_due);

/* requests.c: jobq.cancel() and jobq.wait() requests */
extern Size JobqRequestsShmemSize(void);
extern void JobqRequestsShmemInit(void);
extern int	JobqCancelRequestAdd(int64 id);
extern void JobqCancelRequestRemove(int idx);
extern bool JobqCancelRequestedSince(int64 id, TimestampTz *since);
extern bool JobqCancelRequested(int64 id);
extern void JobqCancelRequestDone(int64 id);
extern bool JobqCancelRequestWasDone(int idx, int64 id);
extern int	JobqWaitBegin(int64 id);
extern void JobqWaitEnd(int idx);
extern void JobqWakeWaitersOf(const int64 *ids, int n, bool overflowed);
extern void JobqWaitPrepareToSleep(void);
extern void JobqWaitSleep(long ms);

/* prune.c: retention */
extern Size JobqPruneShmemSize(void);
extern void JobqPruneShmemInit(void);
extern bool JobqPruneTurn(void);
extern void JobqPruneAgainSoon(void);
extern int	JobqPruneHistory(void);

/* finish.c: every way a job ends, or is scheduled again */
extern TimestampTz JobqNextAttemptTime(int attempts);
extern void JobqFinishJobs(JobqJob *jobs, JobqOutcome *outcomes, int n);
extern bool JobqClaimedJobGone(JobqJob *job);
extern void JobqSweepWaitingJobs(void);
extern int	JobqCountCrashedAttempts(int n, int64 *ids, int32 *attempts,
									 TimestampTz *started, int32 *pids,
									 JobqEscalation *reasons);

/* spi.c: running jobq's own SQL */
extern int	JobqExecuteAsOwner(const char *sql, int nargs, Oid *argtypes,
							   Datum *values, bool read_only);
extern int	JobqExecuteAsOwnerNulls(const char *sql, int nargs, Oid *argtypes,
									Datum *values, const char *nulls,
									bool read_only);
extern int	JobqExecuteAsCaller(const char *sql, int nargs, Oid *argtypes,
								Datum *values, bool read_only);
extern SPIPlanPtr JobqKeepPlan(SPIPlanPtr *plan, const char *sql, int nargs,
							   Oid *argtypes);
extern int	JobqExecuteKept(SPIPlanPtr plan, Datum *values, bool read_only);
extern int	JobqExecuteKeptAsOwner(SPIPlanPtr plan, Datum *values);

/* store.c: direct writes to jobq's tables */
typedef struct JobqTable
{
	const char *relname;		/* in schema jobq */
	bool		valid;
	bool		stale;			/* invalidated since the last build began */
	uint64		generation;		/* bumped by every rebuild */
	MemoryContext cxt;
	Oid			relid;
	TupleDesc	desc;			/* a copy: not reference counted */
	EState	   *estate;		/* evaluates partial-index predicates */
	int			nindexes;
	Oid		   *indexids;
	IndexInfo **indexinfo;
	AttrNumber *skip_attno;		/* rows with this column null skip the index */
	ResultRelInfo *checks;		/* for the NOT NULL and CHECK constraints */
} JobqTable;

/* a backend's copy of a small table, read again after a change */
typedef struct JobqTableCopy
{
	const char *relname;		/* in schema jobq */
	Oid			relid;
	bool		valid;
	uint64		invalidations;	/* relcache invalidations of it seen */
	MemoryContext cxt;			/* holds the copy */
} JobqTableCopy;

extern bool JobqTableCopyStale(JobqTableCopy *c, uint64 *seen);
extern void JobqTableCopyRead(JobqTableCopy *c, uint64 seen);

extern Relation JobqTableOpen(JobqTable *t);
extern AttrNumber JobqTableColumn(JobqTable *t, const char *name, Oid type,
								  bool required);
extern void JobqTableInsert(JobqTable *t, Relation rel,
							TupleTableSlot **slots, int n);
extern TM_Result JobqTableUpdate(JobqTable *t, Relation rel, ItemPointer tid,
								 TupleTableSlot *slot, Bitmapset *changed,
								 bool wait, TM_FailureData *tmfd);
extern TupleTableSlot *JobqTableSlot(JobqTable *t);

/* journal.c: the attempt a worker is in, kept outside the database */
extern Size JobqJournalShmemSize(void);
extern void JobqJournalShmemInit(void);
extern void JobqJournalNoteDeath(void);
extern bool JobqJournalSettleNeeded(int slot);
extern void JobqJournalUnsettled(int slot);
extern void JobqJournalBegin(int slot, const JobqJob *job, TimestampTz started);
extern void JobqJournalEnd(int slot);
extern void JobqJournalSettle(int slot);

/* queue.c: queues and their settings */
typedef struct JobqQueueRule
{
	char		queue[NAMEDATALEN];
	int			concurrency;	/* 0: no limit */
	bool		paused;
} JobqQueueRule;

extern JobqQueueRule *JobqQueueRules(int *n);
extern int	JobqQueueLimit(const char *queue);

/* limits.c: per-role limits */
typedef struct JobqRoleLimit
{
	Oid			role;
	int			max_pending;	/* -1: no limit */
	int			max_running;	/* -1: no limit */
} JobqRoleLimit;

extern JobqRoleLimit *JobqRoleLimits(int *n);
extern int	JobqRoleRunningLimit(Oid role);
extern bool JobqRoleCheckEnqueue(Oid role);
extern void JobqRoleEnqueued(Oid role);
extern bool JobqRoleLockHeld(void);

/* depend.c: jobs that depend on other jobs */
#define JOBQ_MAX_DEPENDENCIES	100
extern Size JobqDependShmemSize(void);
extern void JobqDependShmemInit(void);
extern bool JobqDependentsMayExist(void);
extern void JobqNoteDependents(bool exist);
extern bool JobqCheckDependencies(ArrayType *deps, int *ndeps);
extern int	JobqSettleDependents(const int64 *ids, int n, JobqJob **cancel,
								 int64 **because);
extern int	JobqSettleWaitingJobs(JobqJob **cancel, int64 **because);

/* task.c: registered tasks */
extern void JobqCheckTaskName(const char *name);
extern Oid	JobqTaskForEnqueue(const char *name, bool *external);
extern bool JobqTaskIsExternal(const char *name);
extern FmgrInfo *JobqTaskForJob(const char *name, Oid owner,
								volatile bool *permanent);

/* session.c: what jobs leave in a worker's session */
extern void JobqSessionInit(void);
extern bool JobqSessionMayRun(Oid owner);
extern void JobqSessionJobBegin(void);
extern void JobqSessionJobEnd(bool drop_temp);

/*
 * lease.c: external executors (jobq.claim() and the lease it gives) and
 * the expiry of their leases
 */
#define JOBQ_MAX_EXECUTORS		128
#define JOBQ_MAX_CLAIM			1000	/* most jobs one jobq.claim() takes */
/* SQLSTATE of a call whose lease is no longer held */
#define ERRCODE_JOBQ_LEASE_LOST	MAKE_SQLSTATE('J','Q','0','0','1')
/* last_sqlstate of an attempt whose lease expired */
#define ERRCODE_JOBQ_LEASE_EXPIRED MAKE_SQLSTATE('J','Q','0','0','2')
extern Size JobqLeaseShmemSize(void);
extern void JobqLeaseShmemInit(void);
extern bool JobqLeaseExpiryTurn(void);
extern TimestampTz JobqLeaseNextCheck(void);
extern void JobqLeasesHeld(JobqQueueRule *rules, int nrules, int *queue_held,
						   JobqRoleLimit *limits, int nlimits, int *role_held);
extern void JobqExpireLeases(void);
extern int	JobqExpireLeasesNow(void);

/* inplace.c: a job run by its own transaction's jobq.wait() */
extern void JobqRunInPlace(int64 id);

/* execute.c */
extern void JobqExecuteJob(JobqJob *job, JobqOutcome *outcome,
						   MemoryContext job_context, bool here);
extern void JobqForgetRoleSettings(void);
extern volatile TimestampTz jobq_job_deadline;

#endif							/* JOBQ_H */
