/*-------------------------------------------------------------------------
 *
 * slots.h
 *		The worker slots and the launcher's identity in shared memory (slots.c).
 *
 * IDENTIFICATION
 *		src/slots.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef JOBQ_SLOTS_H
#define JOBQ_SLOTS_H

#include "jobq.h"

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

#endif							/* JOBQ_SLOTS_H */
