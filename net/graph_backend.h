/*
 * The Microsoft Graph implementation of struct mf_backend_ops
 * (mf_backend.h), listed in the registry in backend.c under the type
 * "graph".
 */
#ifndef GRAPH_BACKEND_H
#define GRAPH_BACKEND_H

#include "mf_backend.h"

extern const struct mf_backend_ops mf_graph_backend_ops;

#endif
