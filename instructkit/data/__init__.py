"""Rows in and out: reading and checking input, chat turns, documents, exports, dataset cards, reports."""
