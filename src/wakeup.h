/*-------------------------------------------------------------------------
 *
 * wakeup.h
 *		Waking workers, executors and waiters when a transaction commits (wakeup.c).
 *
 * IDENTIFICATION
 *		src/wakeup.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef JOBQ_WAKEUP_H
#define JOBQ_WAKEUP_H

#include "jobq.h"

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
extern void JobqRegisterAtCommit(void);

#endif							/* JOBQ_WAKEUP_H */
