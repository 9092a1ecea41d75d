/*-------------------------------------------------------------------------
 *
 * executors.h
 *		The registry of external executors (executors.c).
 *
 * IDENTIFICATION
 *		src/executors.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef JOBQ_EXECUTORS_H
#define JOBQ_EXECUTORS_H

typedef enum JobqExecutorEvent
{
	JOBQ_EXEC_CLAIMED,
	JOBQ_EXEC_SEEN,
	JOBQ_EXEC_SUCCEEDED,
	JOBQ_EXEC_FAILED,
	JOBQ_EXEC_EXPIRED
} JobqExecutorEvent;

extern Size JobqExecutorsShmemSize(void);
extern void JobqExecutorsShmemRequest(void);
extern void JobqExecutorsShmemInit(void);
extern void JobqExecutorNote(const char *name, JobqExecutorEvent event,
							 uint64 n, const char *host, int32 pid);

#endif							/* JOBQ_EXECUTORS_H */
