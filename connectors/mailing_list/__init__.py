from lifecycle.connectors.mailing_list.sink import MailingListSink

__all__ = ["MailingListSink"]
